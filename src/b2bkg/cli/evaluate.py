"""``b2bkg evaluate --truth A --generated B --out DIR [--truth2 C]``."""

from __future__ import annotations

import click

from ._common import seed_option


@click.command("evaluate")
@click.option("--truth", type=click.Path(dir_okay=False), required=True, help="Held-out truth file.")
@click.option("--generated", type=click.Path(dir_okay=False), required=True, help="Generated (or distorted) file.")
@click.option("--truth2", type=click.Path(dir_okay=False), help="Second truth sample: gives the truth-vs-truth floor.")
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Output folder (metrics.json + plots).")
@click.option("--train", type=click.Path(dir_okay=False), help="PXD: the model's training file: adds the mode-collapse / memorization check.")
@click.option("--max-events", type=click.IntRange(min=1), default=None, help="Use at most this many events of each file.")
@seed_option
def command(truth, generated, truth2, out, train, max_events, seed):
    """Compare a generated sample with truth: metrics.json and plots (PXD or ECL by schema)."""
    from b2bkg.evaluate import evaluate_files

    metrics = evaluate_files(truth, generated, out, truth2=truth2, seed=seed, max_events=max_events, train=train)
    for line in metrics.get("warnings", []):
        click.echo(f"warning: {line}", err=True)
    click.echo(metrics.get("summary_text", f"wrote {out}/metrics.json"))
