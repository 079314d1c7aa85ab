"""``b2bkg generate --model RUN_DIR --events N --seed S --out FILE ...``: over :func:`b2bkg.generate.generate`."""

from __future__ import annotations

import click


@click.command("generate")
@click.option("--model", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder from b2bkg train.")
@click.option("--events", required=True, type=int, help="Number of events.")
@click.option("--seed", required=True, type=int, help="Master seed (per-event streams).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output file (.h5 / .root).")
@click.option("--conditions", default=None, help="Conditioned models: data file or YAML of beam conditions.")
@click.option("--keep-from", default=None, type=click.Path(dir_okay=False), help="Keep the selected part of these events.")
@click.option("--device", default="cpu", show_default=True, help="torch device.")
@click.option("--batch-size", type=int, default=None, help="Events per sampler call [default: the model's].")
def command(run_dir, events, seed, out, conditions, keep_from, device, batch_size):
    """Generate events from a trained run folder."""
    from b2bkg.cli.main import command_line
    from b2bkg.generate import generate

    path = generate(run_dir, events, seed, out, conditions=conditions, device=device, batch_size=batch_size,
                    keep_from=keep_from, command=command_line())
    click.echo(f"wrote {events} events to {path}")
