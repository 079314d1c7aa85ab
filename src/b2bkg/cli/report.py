"""``b2bkg report PATH... --out report.html``."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", "-o", type=click.Path(dir_okay=False), default="report.html", show_default=True,
              help="HTML file to write (self-contained: images embedded, no network).")
@click.option("--title", default="b2bkg report", show_default=True, help="Page title.")
def command(paths, out, title):
    """One HTML page from evaluation folders (metrics.json + PNGs), run folders (config.yaml, log.csv)
    and benchmark results (benchmarks/run.py --out); folders are searched recursively."""
    from b2bkg.report.html import build_report

    path = build_report(list(paths), out, title=title)
    click.echo(f"wrote {path}")
