"""``b2bkg calibrate``: the PXD truth simulator side by side with the Geant4 reference."""

from __future__ import annotations

import click

from ._common import seed_option


@click.command("calibrate")
@click.option("--events", "-n", type=click.IntRange(min=1), default=200, show_default=True, help="Number of simulated events.")
@seed_option
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), help="Simulator config YAML.")
@click.option("--conditions", type=click.Path(exists=True, dir_okay=False), help="Beam conditions: YAML or a data file.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the result as JSON.")
def command(events, seed, config, conditions, json_out):
    """Simulate PXD background and print it next to the Geant4 reference (PASS/FAIL per check)."""
    from b2bkg.pxd.calibrate import calibrate, format_table

    cfg = None
    if config:
        from b2bkg.core.config import load_config
        from b2bkg.pxd.simulate import PxdSimConfig

        cfg = load_config(PxdSimConfig, config)
    res = calibrate(events, seed, config=cfg, conditions=conditions)
    click.echo(format_table(res))
    if json_out:
        import json

        from b2bkg.io.atomic import atomic_path

        out = {k: v for k, v in res.items() if k != "occupancy_per_sensor"}
        out["occupancy_per_sensor"] = [float(x) for x in res["occupancy_per_sensor"]]
        with atomic_path(json_out) as tmp:
            with open(tmp, "w") as f:
                json.dump(out, f, indent=1, default=float)
