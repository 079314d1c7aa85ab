"""Options and helpers shared by the verb modules."""

from __future__ import annotations

import click

seed_option = click.option("--seed", type=int, default=1, show_default=True, help="Master seed (per-event streams derive from it).")


def command_line() -> str:
    from .main import command_line as _cl

    return _cl()


def echo_table(rows: list[tuple], header: tuple | None = None) -> None:
    """Print a simple aligned text table."""
    rows = [tuple(str(x) for x in r) for r in rows]
    if header:
        rows = [tuple(header), *rows]
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if header and j == 0:
            click.echo("  ".join("-" * w for w in widths))
