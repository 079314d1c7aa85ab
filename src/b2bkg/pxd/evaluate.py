"""PXD evaluation: distances with bootstrap errors and truth-vs-truth floor, summaries and plots.

:func:`evaluate_pxd` writes into ``out_dir`` (each file atomically: temporary name, then rename):

* ``metrics.json``, layout (schema ``b2bkg.pxd.metrics/1``; NaN written as ``null``)::

    {
      "schema": "b2bkg.pxd.metrics/1",
      "labels": {"truth": "...", "generated": "..."},
      "n_events": {"truth": N, "generated": N, "truth2": N | null, "floor": N | null},
      "seed": S, "n_boot": B,
      "distances": {                      # every name of b2bkg.pxd.metrics.DISTANCES
        "w1_charge": {"value": v, "err": e, "floor": f, "floor_err": fe, "unit": "ADU",
                      "description": "..."},   # floor / floor_err only with truth2
        ...
      },
      "summary": {"truth": {...}, "generated": {...}, "truth2": {...}},   # summarize_pxd() keys
      "per_sensor": {"occupancy_pct": {"truth": [40], "generated": [40], "truth2": [40]},
                     "occupancy_rel_err": [40]},       # (generated - truth) / truth
      "plots": ["occupancy_per_sensor.png", ...]
    }

  ``n_events.floor`` is the size of the ``truth2`` sample used for the floor (the generated
  sample's size, or all of ``truth2`` if it is smaller).
* plots (PNG): ``occupancy_per_sensor``, ``correlation``, ``charge``, ``cluster_size``,
  ``cluster_u_extent``, ``cluster_v_extent``, ``cluster_total_charge``, ``cluster_seed_charge``,
  ``image_occupancy``, ``event_display``.

Example:
    >>> import numpy as np, tempfile
    >>> from b2bkg.io.events import PxdDigits
    >>> d = PxdDigits([0, 3, 5], sensor=[0, 0, 16, 1, 1], ucell=[1, 2, 9, 4, 4], vcell=[1, 2, 9, 4, 5],
    ...               charge=[10, 30, 7, 8, 9])
    >>> m = evaluate_pxd(d, d, tempfile.mkdtemp(), n_boot=2, plots=False)
    >>> m["distances"]["w1_charge"]["value"], round(m["summary"]["truth"]["cluster_size_mean"], 4)
    (0.0, 1.6667)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from b2bkg.core.errors import ConfigError
from b2bkg.io.atomic import atomic_path
from b2bkg.io.events import PxdDigits

from .metrics import (
    DISTANCES, PIXELS_PER_SENSOR, PxdSummary, compare_with_floor, occupancy_correlation, summarize_from_summary,
)

__all__ = ["evaluate_pxd", "format_metrics", "METRICS_SCHEMA", "PLOTS"]

METRICS_SCHEMA = "b2bkg.pxd.metrics/1"
#: file names of the plots evaluate_pxd writes
PLOTS = (
    "occupancy_per_sensor.png", "correlation.png", "charge.png", "cluster_size.png", "cluster_u_extent.png",
    "cluster_v_extent.png", "cluster_total_charge.png", "cluster_seed_charge.png", "image_occupancy.png",
    "event_display.png",
)
_CLUSTER_AXES = {
    "size": ("cluster size [pixels]", 1),
    "u_extent": ("cluster u extent [pixels]", 1),
    "v_extent": ("cluster v extent [pixels]", 1),
    "total_charge": ("cluster charge [ADU]", 1),
    "seed_charge": ("cluster seed charge [ADU]", 1),
}


def _clean(x):
    """JSON-ready copy: numpy scalars -> Python, NaN/inf -> None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


def _write_json(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_clean(obj), indent=1, allow_nan=False) + "\n")


def _sensor_mean_err(s: PxdSummary) -> tuple[np.ndarray, np.ndarray]:
    occ = s.counts / PIXELS_PER_SENSOR * 100
    n = len(occ)
    err = occ.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(occ.shape[1])
    return occ.mean(0), err


def evaluate_pxd(truth: PxdDigits, generated: PxdDigits, out_dir: str | Path, *, truth2: PxdDigits | None = None,
                 seed: int = 0, n_boot: int = 100, labels: Sequence[str] = ("truth", "generated"),
                 plots: bool = True, display_event: int = 0, display_sensors: Sequence[int] = (0, 1, 16, 17),
                 train: PxdDigits | None = None) -> dict:
    """Compare a generated PXD sample with truth; write ``metrics.json`` and plots into ``out_dir``.

    Args:
        truth: the reference digits (n_t events).
        generated: the digits to judge (n_g events).
        out_dir: output folder (created).
        truth2: optional independent truth sample: every distance also gets its truth-vs-truth
            ``floor`` at the generated sample's size (see :func:`b2bkg.pxd.metrics.compare_with_floor`).
        seed: seed of the bootstrap resampling.
        n_boot: bootstrap resamplings for the errors (0: no errors).
        labels: legend / JSON names of (truth, generated).
        plots: write the PNG plots (False: metrics.json only).
        display_event, display_sensors: what the event display shows.
        train: optional training sample of the model: adds the mode-collapse / memorization check
            ``diversity`` (:func:`b2bkg.pxd.metrics.diversity_check`, generated and truth vs train).

    Returns:
        the metrics dict written to ``metrics.json`` (module docstring: layout).
    """
    if len(labels) != 2:
        raise ConfigError(f"labels: need two names (truth, generated), got {list(labels)}")
    for name, d in (("truth", truth), ("generated", generated)):
        if d.n_events == 0:
            raise ConfigError(f"evaluate: the {name} sample has no events")
    bad = [s for s in display_sensors if not 0 <= int(s) < 40]
    if bad:
        raise ConfigError(f"display_sensors: {bad} outside 0..39")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    st, sg = PxdSummary.from_digits(truth), PxdSummary.from_digits(generated)
    s2 = PxdSummary.from_digits(truth2) if truth2 is not None and truth2.n_events else None
    dist = compare_with_floor(st, sg, s2, n_boot=n_boot, seed=seed)
    for k, (unit, desc) in DISTANCES.items():
        dist[k]["unit"], dist[k]["description"] = unit, desc

    names = {"truth": st, "generated": sg} | ({"truth2": s2} if s2 is not None else {})
    summary = {k: summarize_from_summary(s) for k, s in names.items()}
    occ = {k: _sensor_mean_err(s) for k, s in names.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(occ["truth"][0] > 0, occ["generated"][0] / occ["truth"][0] - 1, np.nan)

    metrics = {
        "schema": METRICS_SCHEMA,
        "labels": {"truth": labels[0], "generated": labels[1]},
        "n_events": {
            "truth": st.n_events, "generated": sg.n_events,
            "truth2": s2.n_events if s2 is not None else None,
            "floor": min(s2.n_events, sg.n_events) if s2 is not None else None,
        },
        "seed": int(seed),
        "n_boot": int(n_boot),
        "distances": dist,
        "summary": summary,
        "per_sensor": {"occupancy_pct": {k: v[0] for k, v in occ.items()}, "occupancy_rel_err": rel},
        "plots": list(PLOTS) if plots else [],
    }
    if train is not None and train.n_events:
        from .metrics import diversity_check

        metrics["diversity"] = diversity_check(generated, train, truth)
    if plots:
        _write_plots(out, names, occ, labels, truth, generated, display_event, display_sensors)
    _write_json(out / "metrics.json", metrics)
    return _clean(metrics)


def _write_plots(out: Path, names: dict[str, PxdSummary], occ: dict, labels: Sequence[str], truth: PxdDigits,
                 generated: PxdDigits, display_event: int, display_sensors: Sequence[int]) -> None:
    from . import plots as P

    keys = list(names)
    lab = [labels[0], labels[1], "truth 2"][: len(keys)]
    P.plot_occupancy_per_sensor(out / "occupancy_per_sensor.png", [occ[k][0] for k in keys], [occ[k][1] for k in keys], lab)
    P.plot_correlations(out / "correlation.png", occupancy_correlation(names["truth"].counts),
                        occupancy_correlation(names["generated"].counts), labels)

    def total(h):
        return np.asarray(h.sum(0)).ravel()

    P.plot_spectra(out / "charge.png", [total(names[k].charge_hist) for k in keys], lab, "fired-pixel charge [ADU]",
                   min_value=1, max_value=255, max_bins=255)
    for f, (xlabel, lo) in _CLUSTER_AXES.items():
        P.plot_spectra(out / f"cluster_{f}.png", [total(names[k].cluster_hists[f]) for k in keys], lab, xlabel, min_value=lo)
    P.plot_spectra(out / "image_occupancy.png", [total(names[k].image_hist) for k in keys], lab,
                   "per-image occupancy [%]", scale=100.0 / PIXELS_PER_SENSOR, max_bins=80, log_bins=False)
    P.plot_event_display(out / "event_display.png", [truth, generated], labels, event=display_event, sensors=display_sensors)


def format_metrics(metrics: dict, *, summary_keys: Sequence[str] = (
        "n_events", "occupancy_pct", "occupancy_layer1_pct", "occupancy_layer2_pct", "image_occupancy_q50_pct",
        "charge_mean_adu", "charge_median_adu", "charge_q90_adu", "charge_q99_adu", "clusters_per_event",
        "cluster_size_mean", "cluster_size1_frac")) -> str:
    """Plain-text tables of a metrics dict (as returned by :func:`evaluate_pxd` / read from
    ``metrics.json``): the distances (value +- err, floor +- err, unit) and key summary numbers."""
    def pm(v, e):
        if v is None:
            return "-"
        return f"{v:.4g}" + (f" +- {e:.2g}" if e is not None else "")

    dist = metrics.get("distances", {})
    has_floor = any("floor" in d for d in dist.values())
    rows = [("distance", "value", "floor" if has_floor else "", "unit")]
    for k, d in dist.items():
        rows.append((k, pm(d.get("value"), d.get("err")), pm(d.get("floor"), d.get("floor_err")) if has_floor else "",
                     d.get("unit", "")))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    summ = metrics.get("summary", {})
    if summ:
        cols = list(summ)
        head = ("statistic", *[metrics.get("labels", {}).get(c, c) for c in cols])
        srows = [head]
        for k in summary_keys:
            vals = [summ[c].get(k) for c in cols]
            srows.append((k, *["-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in vals]))
        sw = [max(len(r[i]) for r in srows) for i in range(len(head))]
        lines += ["", *["  ".join(c.ljust(sw[i]) for i, c in enumerate(r)).rstrip() for r in srows]]
        lines.insert(len(lines) - len(srows) + 1, "-" * len(lines[len(lines) - len(srows)]))
    div = metrics.get("diversity")
    if div:
        lines += ["", "mode collapse / memorization (vs the training sample)     generated  truth",
                  f"per-image occupancy std [%]                               {div['occ_std_pct_gen']:<10.3g} {div['occ_std_pct_truth']:.3g}",
                  f"median distance to the nearest training image             {div['nn_train_gen']:<10.3g} {div['nn_train_truth']:.3g}",
                  f"median distance to the nearest other image of the sample  {div['nn_self_gen']:<10.3g} {div['nn_self_truth']:.3g}"]
    return "\n".join(lines)
