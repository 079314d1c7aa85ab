"""``b2bkg simulate {pxd,ecl,smc}``: the embedded truth simulators."""

from __future__ import annotations

import click

from ._common import command_line, seed_option

SAMPLES = ["charged", "mixed", "uubar", "ddbar", "ssbar", "ccbar", "taupair"]


@click.command("simulate")
@click.argument("what", type=click.Choice(["pxd", "ecl", "smc"]))
@click.option("--events", "-n", type=click.IntRange(min=0), required=True, help="Number of events.")
@seed_option
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="Output file (.h5 or .root).")
@click.option("--conditions", type=click.Path(exists=True, dir_okay=False), help="Beam conditions: YAML of scales/spreads, or a data file whose conditions are reused event by event.")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), help="Simulator config YAML (pxd, ecl).")
@click.option("--sample", type=click.Choice(SAMPLES), default="mixed", show_default=True, help="smc: event sample.")
@click.option("--oracle-repeats", type=click.IntRange(min=0), default=0, show_default=True, help="smc: re-run detector+skim K times -> pass_prob_<skim>.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=None, help="Events per written chunk (does not change the output).")
def command(what, events, seed, out, conditions, config, sample, oracle_repeats, chunk_size):
    """Simulate truth background (pxd, ecl) or generator-level events (smc)."""
    kw = {} if chunk_size is None else {"chunk_size": chunk_size}
    if what == "pxd":
        from b2bkg.core.config import load_config
        from b2bkg.pxd.simulate import PxdSimConfig, simulate_pxd

        cfg = load_config(PxdSimConfig, config) if config else None
        path = simulate_pxd(events, seed, out, conditions=conditions, config=cfg, command=command_line(), **kw)
    elif what == "ecl":
        from b2bkg.core.config import load_config
        from b2bkg.ecl.simulate import EclSimConfig, simulate_ecl

        cfg = load_config(EclSimConfig, config) if config else None
        path = simulate_ecl(events, seed, out, conditions=conditions, config=cfg, command=command_line(), **kw)
    else:
        from b2bkg.selmc.simulate import simulate_smc

        path = simulate_smc(events, seed, out, sample=sample, oracle_repeats=oracle_repeats, command=command_line(), **kw)
    click.echo(f"wrote {path}")
