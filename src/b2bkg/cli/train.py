"""``b2bkg train MODEL --data FILE --out RUN_DIR ...``: a thin shell over :func:`b2bkg.training.train`."""

from __future__ import annotations

import click


@click.command("train")
@click.argument("model")
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Training data file.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@click.option("--config", default=None, help="Preset name (small, paper) or a YAML file [default: small].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one config field (repeatable).")
@click.option("--val", default=None, type=click.Path(dir_okay=False), help="Held-out data for validation / best checkpoint.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--seed", type=int, default=None, help="Master seed [default: 0; on --resume: the run's].")
@click.option("--device", default="cpu", show_default=True, help="torch device (cpu, cuda, cuda:1...).")
def command(model, data, out, config, overrides, val, resume, seed, device):
    """Train MODEL on a data file into a run folder (runs under torchrun for DDP)."""
    from b2bkg.cli.main import command_line
    from b2bkg.training import train

    run = train(model, data, out, config=config, overrides=list(overrides), val=val, resume=resume, seed=seed,
                device=device, command=command_line())
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"run folder: {run}")
