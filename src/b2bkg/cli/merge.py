"""``b2bkg merge IN... --out OUT``."""

from __future__ import annotations

import click

from ._common import command_line


@click.command("merge")
@click.argument("srcs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "-o", "dst", type=click.Path(dir_okay=False), required=True, help="Output file (.h5 or .root).")
@click.option("--chunk", type=click.IntRange(min=1), default=100, show_default=True, help="Events per chunk.")
@click.option("--allow-mixed", is_flag=True, help="Merge files from different truth-simulator versions anyway.")
def command(srcs, dst, chunk, allow_mixed):
    """Concatenate the events of data files with the same groups (e.g. shards of one sample)."""
    from b2bkg.io import merge

    click.echo(f"wrote {merge(srcs, dst, chunk=chunk, command=command_line(), allow_mixed=allow_mixed)}")
