"""``b2bkg info FILE``."""

from __future__ import annotations

import json

import click


@click.command("info")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(file, as_json):
    """Schema, events, hits or waveforms per event and size of a data file."""
    from b2bkg.io.info import format_info, info

    d = info(file)
    click.echo(json.dumps(d, indent=2) if as_json else format_info(d))
