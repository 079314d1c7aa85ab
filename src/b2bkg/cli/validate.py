"""``b2bkg validate``: track pulls and vertex resolution with no / true / generated PXD background,
ECL cluster physics with no / true / generated ECL background."""

from __future__ import annotations

import click

from ._common import command_line, seed_option


def _f(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else str(x)


@click.command("validate")
@click.option("--pxd-model", type=click.Path(exists=True, file_okay=False), help="PXD model run folder for the generated-background scenario.")
@click.option("--ecl-model", type=click.Path(exists=True, file_okay=False), help="ECL model run folder for the generated-background scenario of the ECL cluster physics.")
@click.option("--events", "-n", type=click.IntRange(min=1), default=None, help="Signal events (default 100: ~2000 tracks).")
@seed_option
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Output folder (validation.json, plots, signal files).")
@click.option("--tracks-per-event", type=click.IntRange(min=1), default=None, help="Y(4S)-like tracks per event (default 20).")
@click.option("--device", default="cpu", show_default=True, help="Torch device of the generator.")
@click.option("--no-vertex", is_flag=True, help="Skip the D0 vertex study.")
@click.option("--ecl-events", type=click.IntRange(min=1), default=None, help="Signal events of the ECL cluster physics (default: --events).")
@click.option("--no-ecl", is_flag=True, help="Skip the ECL cluster physics.")
@click.option("--no-roi", is_flag=True, help="Skip the pulls with PXD background inside regions of interest only.")
def command(pxd_model, ecl_model, events, seed, out, tracks_per_event, device, no_vertex, ecl_events, no_ecl, no_roi):
    """Impact-parameter pulls, D0 vertex resolution and ECL cluster physics with no / true / generated background."""
    from b2bkg.validation.run import DEFAULT_EVENTS, DEFAULT_TRACKS_PER_EVENT, validate

    doc = validate(out, events=events or DEFAULT_EVENTS, seed=seed, pxd_model=pxd_model, ecl_model=ecl_model,
                   tracks_per_event=tracks_per_event or DEFAULT_TRACKS_PER_EVENT, device=device, vertex=not no_vertex,
                   command=command_line(), ecl=not no_ecl, ecl_events=ecl_events, roi=not no_roi)
    rows = []
    for scen in ("none", "truth", "generated"):
        d = doc[scen]
        if "skipped" in d:
            click.echo(f"{scen}: skipped ({d['skipped']})")
            continue
        for b in ("pt_lt_0.2", "pt_0.2_1"):
            x = {k: ("n/a" if v is None else v) for k, v in d[b].items()}  # None: too few tracks to fit
            rows.append((scen, b, x["n_tracks"], f"{_f(x['d0_pull_width'])} +- {_f(x['d0_pull_width_err'])}",
                         f"{_f(x['z0_pull_width'])} +- {_f(x['z0_pull_width_err'])}", _f(x["wrong_pxd_hit_fraction"])))
    from ._common import echo_table

    echo_table(rows, ("scenario", "pT bin", "tracks", "d0 pull width", "z0 pull width", "wrong PXD hits"))
    roi = doc.get("roi", {})
    if "skipped" not in roi:
        st = roi["settings"]
        line = f"roi: {st['rois_per_event']:.1f} ROIs per event, {100 * st['area_fraction']:.2f} % of the PXD"
        g = roi.get("generation")
        if g and g.get("cost_ratio") is not None:
            line += f"; generation inside ROIs ({g['mode']}) costs {100 * g['cost_ratio']:.0f} % of the full events"
        click.echo(line)
    ecl = doc.get("ecl", {})
    if "skipped" in ecl:
        click.echo(f"ecl: skipped ({ecl['skipped']})")
    else:
        erows = []
        for scen in ("none", "truth", "generated"):
            d = ecl[scen]
            if "skipped" in d:
                click.echo(f"ecl {scen}: skipped ({d['skipped']})")
                continue
            x = {k: ("n/a" if v is None else v) for k, v in d.items()}

            def pm(k, scale=1.0, x=x):
                v, e = x[k], x[f"{k}_err"]
                return f"{_f(v * scale)} +- {_f(e * scale)}" if isinstance(v, float) and isinstance(e, float) else "n/a"

            erows.append((scen, pm("energy_resolution"), pm("time_resolution_ns"), pm("pi0_mass_mean_gev", 1e3),
                          pm("pi0_mass_width_gev", 1e3), pm("e_extra_mean_gev")))
        echo_table(erows, ("ecl scenario", "E resolution", "time res. (ns)", "pi0 mass (MeV)", "pi0 width (MeV)", "E_extra (GeV)"))
    for name, c in doc["checks"].items():
        click.echo(f"check {name}: {'passed' if c.get('passed', c.get('agree')) else 'FAILED'}")
    click.echo(f"wrote {out}/validation.json")
