"""``b2bkg reproduce --out DIR``."""

from __future__ import annotations

import click

from ._common import seed_option


@click.command("reproduce")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="reproduce", show_default=True)
@seed_option
def command(out, seed):
    """Regenerate every README table at its stated sample size (hours on 2 CPU cores)."""
    from b2bkg.demo import run_reproduce

    run_reproduce(out, seed)
