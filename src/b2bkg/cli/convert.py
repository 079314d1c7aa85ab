"""``b2bkg convert IN OUT``."""

from __future__ import annotations

import click

from ._common import command_line


@click.command("convert")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--chunk", type=click.IntRange(min=1), default=100, show_default=True, help="Events per chunk.")
def command(src, dst, chunk):
    """Convert a data file between HDF5 and ROOT (format by suffix)."""
    from b2bkg.io import convert

    click.echo(f"wrote {convert(src, dst, chunk=chunk, command=command_line())}")
