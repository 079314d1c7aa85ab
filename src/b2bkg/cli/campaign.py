"""``b2bkg campaign --model RUN_DIR --events N --shards K --out DIR [--scheduler ADDRESS] [--seed S]``:
over :func:`b2bkg.campaign.dask.run_campaign`."""

from __future__ import annotations

import click


@click.command("campaign")
@click.option("--model", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder from b2bkg train.")
@click.option("--events", required=True, type=int, help="Total number of events.")
@click.option("--shards", required=True, type=int, help="Number of shard files (contiguous event ranges).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Campaign folder (shards + manifest.json).")
@click.option("--seed", type=int, default=1, show_default=True, help="Master seed (per-event streams derive from it).")
@click.option("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786) [default: a LocalCluster].")
@click.option("--workers", type=int, default=None, help="LocalCluster worker processes [default: CPU cores, <= shards].")
@click.option("--batch-size", type=int, default=None, help="Events per sampler call [default: the model's].")
@click.option("--device", default="cpu", show_default=True, help="torch device of the workers.")
@click.option("--conditions", default=None, help="Conditioned models: data file or YAML of beam conditions.")
@click.option("--merge", is_flag=True, help="Also write merged.<suffix> with all events in order.")
def command(run_dir, events, shards, out, seed, scheduler, workers, batch_size, device, conditions, merge):
    """Sharded, resumable generation campaign on Dask (re-run the same command to resume)."""
    from b2bkg.campaign.dask import run_campaign
    from b2bkg.cli.main import command_line

    m = run_campaign(run_dir, events, shards, out, seed=seed, scheduler=scheduler, n_workers=workers,
                     batch_size=batch_size, device=device, conditions=conditions, merge=merge,
                     command=command_line(), log=lambda msg: click.echo(msg, err=True))
    click.echo(f"campaign {m['status']}: {m['events']} events in {m['shards']} shards in {out}")
