"""``b2bkg demo --out DIR``."""

from __future__ import annotations

import click

from ._common import seed_option


@click.command("demo")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="demo", show_default=True)
@seed_option
def command(out, seed):
    """Run the main job end to end on the embedded default and write DIR/report.html."""
    from b2bkg.demo import run_demo

    run_demo(out, seed)
