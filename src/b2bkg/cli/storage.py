"""``b2bkg storage RUN_DIR...``: over :func:`b2bkg.campaign.storage.storage_table`."""

from __future__ import annotations

import click


@click.command("storage")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--truth-events", type=int, default=3, show_default=True,
              help="n: 2n truth events per pillar are simulated to measure contract bytes/event.")
@click.option("--gen-events", type=int, default=4, show_default=True, help="Events generated per model (1 thread).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the truth simulation and generation.")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False),
              help="Also write the result as JSON to this file ('-': print JSON instead of the table).")
def command(run_dirs, truth_events, gen_events, seed, json_out):
    """What replacing overlay files by each model costs and saves (seed and contract baselines)."""
    import json

    from b2bkg.campaign.storage import format_storage_table, storage_table
    from b2bkg.core.progress import is_quiet
    from b2bkg.io.atomic import write_text_atomic

    res = storage_table(run_dirs, truth_events=truth_events, gen_events=gen_events, seed=seed,
                        log=None if is_quiet() else (lambda m: click.echo(m, err=True)))
    text = json.dumps(res, indent=1, default=str)
    if json_out == "-":
        click.echo(text)
        return
    if json_out:
        write_text_atomic(json_out, text + "\n")
    click.echo(format_storage_table(res))
