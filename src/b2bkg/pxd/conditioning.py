"""How well a conditioned PXD generator tracks the truth at given beam conditions.

Issue 6 asks that a generator trained over a range of background conditions (the files'
``conditions`` group) reproduces the truth simulator's occupancy per sensor at held-out conditions
inside the trained range. :func:`conditioning_check` compares, per held-out condition set, a truth
sample with a sample generated at the same conditions (``b2bkg generate --conditions TRUTH``):
total and per-layer occupancy bias, the per-sensor relative errors, the worst sensor and its pull
(its error over the combined statistical error of the two per-sensor means), and the statistical
error per sensor, so a reader can tell a model error from sampling noise.

Example:
    >>> from b2bkg.io.events import PxdDigits
    >>> t = PxdDigits([0, 2, 4], sensor=[0, 1, 0, 1], ucell=[1, 2, 3, 4], vcell=[1, 2, 3, 4], charge=[9, 9, 9, 9])
    >>> row = conditioning_check({"nominal": (t, t)})[0]
    >>> row["label"], row["occupancy_bias_pct"], row["sensor_mean_abs_err_pct"]
    ('nominal', 0.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import PxdDigits

from .geometry import LAYER
from .metrics import sensor_counts

__all__ = ["conditioning_check", "format_conditioning", "plot_conditioning"]


def _mean_and_err(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sensor mean fired pixels and its standard error, each (40,)."""
    n = len(counts)
    err = counts.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(counts.shape[1])
    return counts.mean(0), err


def conditioning_check(samples: Mapping[str, tuple[PxdDigits, PxdDigits]]) -> list[dict]:
    """Occupancy of generated vs truth samples, one row per held-out condition set.

    Args:
        samples: ``label -> (truth, generated)``; each pair should share the beam conditions
            (e.g. generated with ``--conditions`` of the truth file). Sizes may differ.

    Returns:
        One dict per label (in order) with ``label``, ``n_truth``, ``n_generated`` and, in percent:
        ``occupancy_bias_pct`` (total fired pixels, generated / truth - 1), ``layer_bias_pct``
        (2 values, layer 1 and 2), ``sensor_mean_abs_err_pct`` (mean over sensors of
        ``|gen_s / truth_s - 1|``), ``sensor_max_abs_err_pct`` and ``worst_sensor`` (0-39),
        ``worst_pull`` (that sensor's error over its combined statistical error) and
        ``sensor_stat_err_pct`` (mean over sensors of the combined relative statistical error);
        per sensor (40 values, NaN where the truth has no hit): ``sensor_rel_err_pct`` and its
        statistical error ``sensor_stat_pct``. Sensors with no truth hits are skipped.

    Raises:
        ConfigError: a sample has no events.
    """
    rows = []
    for label, (truth, gen) in samples.items():
        if truth.n_events == 0 or gen.n_events == 0:
            raise ConfigError(f"conditioning_check: sample {label!r} has no events (truth {truth.n_events}, generated {gen.n_events})")
        ct, cg = sensor_counts(truth).astype(np.float64), sensor_counts(gen).astype(np.float64)
        mt, et = _mean_and_err(ct)
        mg, eg = _mean_and_err(cg)
        ok = mt > 0
        rel = np.where(ok, mg / np.where(ok, mt, 1.0) - 1.0, 0.0)  # (40,)
        # relative error of the ratio mg / mt from both means' standard errors
        stat = np.where(ok, np.sqrt((eg / np.maximum(mg, 1e-12)) ** 2 + (et / np.where(ok, mt, 1.0)) ** 2) * (1 + rel), np.inf)
        worst = int(np.argmax(np.where(ok, np.abs(rel), -1.0)))
        layer_bias = [float(mg[(LAYER == k) & ok].sum() / max(mt[(LAYER == k) & ok].sum(), 1e-12) - 1) * 100 for k in (1, 2)]
        rows.append({
            "label": str(label), "n_truth": int(truth.n_events), "n_generated": int(gen.n_events),
            "occupancy_bias_pct": float(mg[ok].sum() / max(mt[ok].sum(), 1e-12) - 1) * 100,
            "layer_bias_pct": layer_bias,
            "sensor_mean_abs_err_pct": float(np.abs(rel[ok]).mean()) * 100 if ok.any() else float("nan"),
            "sensor_max_abs_err_pct": float(abs(rel[worst])) * 100,
            "worst_sensor": worst,
            "worst_pull": float(rel[worst] / stat[worst]) if np.isfinite(stat[worst]) and stat[worst] > 0 else float("nan"),
            "sensor_stat_err_pct": float(stat[ok].mean()) * 100 if ok.any() else float("nan"),
            "sensor_rel_err_pct": [float(x) * 100 if o else float("nan") for x, o in zip(rel, ok)],
            "sensor_stat_pct": [float(x) * 100 if o else float("nan") for x, o in zip(stat, ok)],
        })
    return rows


def format_conditioning(rows: list[dict]) -> str:
    """Markdown table of :func:`conditioning_check` rows."""
    lines = ["| held-out conditions | events (truth / gen) | occupancy bias | L1 / L2 bias | per-sensor mean abs. error "
             "| worst sensor (pull) | stat. error per sensor |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        l1, l2 = r["layer_bias_pct"]
        lines.append(f"| {r['label']} | {r['n_truth']} / {r['n_generated']} | {r['occupancy_bias_pct']:+.1f} % | {l1:+.1f} / {l2:+.1f} % "
                     f"| {r['sensor_mean_abs_err_pct']:.1f} % | {r['sensor_max_abs_err_pct']:.1f} % (sensor {r['worst_sensor']}, "
                     f"{r['worst_pull']:+.1f}σ) | {r['sensor_stat_err_pct']:.2f} % |")
    return "\n".join(lines)


def plot_conditioning(rows: list[dict], path):
    """Per-sensor relative occupancy error (generated / truth - 1, %) with its statistical error, one
    marker series per condition set, the +-3 % band of issue 6 shaded; written to ``path`` (PNG,
    atomically). Returns the path."""
    from b2bkg.report.style import label, new_figure, save_figure

    fig, ax = new_figure(1, 1, size=(9.0, 4.0))
    ax.axhspan(-3, 3, color="0.9", label="±3 %")
    for i, r in enumerate(rows):
        x = np.arange(len(r["sensor_rel_err_pct"])) + (i - (len(rows) - 1) / 2) * 0.15
        ax.errorbar(x, r["sensor_rel_err_pct"], yerr=r["sensor_stat_pct"], fmt="o", ms=3, capsize=0, label=r["label"])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("sensor index (0-15 layer 1, 16-39 layer 2)")
    ax.set_ylabel("occupancy generated / truth - 1 [%]")
    ax.legend(fontsize=8, ncol=min(len(rows) + 1, 5))
    label(ax)
    return save_figure(fig, path)
