"""``b2bkg overlay``: background onto signal events."""

from __future__ import annotations

import click

from ._common import command_line, seed_option


@click.command("overlay")
@click.option("--signal", "signal", type=click.Path(exists=True, dir_okay=False), required=True, help="Signal events (pxd and/or ecl group).")
@click.option("--background", "background", type=click.Path(exists=True), required=True, help="Background data file, or a model run folder (generated on the fly).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="Output file (.h5 or .root).")
@click.option("--reuse", is_flag=True, help="Recycle background events when the background file has fewer events than the signal.")
@click.option("--roi", is_flag=True, help="Overlay PXD background only inside the regions of interest of the signal's tracks "
              "(pxd-fast run folders are sampled inside them only).")
@click.option("--device", default="cpu", show_default=True, help="Torch device of a model background.")
@seed_option
def command(signal, background, out, reuse, roi, device, seed):
    """Overlay background (file or run folder) onto every signal event."""
    from b2bkg.overlay import overlay_files

    res = overlay_files(signal, background, out, reuse=reuse, seed=seed, device=device, command=command_line(), roi=roi)
    for note in res.notes:
        click.echo(f"note: {note}")
    click.echo(f"wrote {res.path}: {res.n_events} events, overlaid {','.join(res.overlaid)} from {res.background_kind} background"
               f" ({res.n_recycled} background events recycled)")
