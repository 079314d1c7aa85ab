"""``b2bkg filter``: keep generator-level events by the skim-prediction network's score.

Writes only the kept events, each with ``weight_<skim>`` (all skims of the model unless
``--skim``), and records ``n_input_events``. The skim emulator is never run; ``passed_*`` and
``pass_prob_*`` of the input are copied through but never read.
"""

from __future__ import annotations

import click

from ._common import command_line, echo_table, seed_option


@click.command("filter")
@click.option("--model", "model", type=click.Path(exists=True, file_okay=False), required=True, help="smc-nn run folder.")
@click.option("--in", "inp", type=click.Path(exists=True, dir_okay=False), required=True, help="Generator-level events (smc group).")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Output file (.h5 or .root): kept events + weights.")
@click.option("--mode", type=click.Choice(["sample", "threshold"]), default="sample", show_default=True,
              help="sample: keep with p = clip(scale * score^power, p_min, 1), weight 1/p; threshold: keep score >= T, weight 1 (biased).")
@click.option("--p-min", type=click.FloatRange(1e-6, 1.0), default=0.01, show_default=True, help="Smallest keep probability (weights <= 1/p_min).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True, help="Score cut of --mode threshold.")
@click.option("--scale", type=click.FloatRange(1e-9, None), default=1.5, show_default=True,
              help="Keep map scale; with --power 0.5 (p ~ sqrt(score)) it minimises the cost per effective passing event.")
@click.option("--power", type=click.FloatRange(1e-3, 10.0), default=0.5, show_default=True,
              help="Keep map power (1 with --scale 1: the seed's p = score).")
@click.option("--skim", "skims", multiple=True, help="Skim(s) to weight for (repeatable; default: all the model predicts).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=10000, show_default=True, help="Events scored at once (does not change the output).")
@seed_option
def command(model, inp, out, mode, p_min, threshold, scale, power, skims, chunk_size, seed):
    """Filter generator-level events with a trained smc-nn network."""
    from b2bkg.selmc.weighting import FilterConfig, filter_file

    cfg = FilterConfig(mode=mode, p_min=p_min, threshold=threshold, scale=scale, power=power)
    res = filter_file(model, inp, out, cfg=cfg, skims=skims or None, seed=seed, chunk=chunk_size, command=command_line())
    rows = [(s, st["n_kept"], f"{st['sum_w']:.1f}", f"{st['max_w']:.1f}", f"{st['n_eff']:.1f}") for s, st in res["skims"].items()]
    echo_table(rows, ("skim", "kept", "sum w", "max w", "N_eff (all kept)"))
    click.echo(f"wrote {out}: {res['n_kept']} of {res['n_input_events']} events kept")
