"""Evaluate generated ECL waveforms against truth: ``metrics.json`` + plots.

Sample sizes: KS2 depends on ``n``, so model and floor are always computed at the same ``n``
waveforms per crystal (one per event). With ``truth2`` (an independent truth sample) the model
uses ``truth[:n]`` vs ``generated[:n]`` and the floor ``truth[:n]`` vs ``truth2[:n]``,
``n = min`` of the three event counts. Without it, truth is split in halves A, B: model A vs
``generated[:n]``, floor A vs B, ``n = len(truth) // 2``.

``mask`` (bool (n_truth, 8736)) marks waveforms of ``truth`` to leave out — the selected
"interesting" ones that the hybrid keeps and models do not learn; ``truth2`` then gets its own
selection (:func:`b2bkg.ecl.select.select_waveforms`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import EclWaveforms

from .geometry import N_CRYSTALS, RING_SIZES, RING_START, crystal_region, REGION_NAMES
from .metrics import METRIC_NAMES, event_level_checks, ks2_per_crystal, make_validation_subset, pedestal_check, pooled_autocovariance, waveform_metrics
from . import plots

__all__ = ["evaluate_ecl", "ks2_all_crystals", "mean_waveform_per_ring"]


def _arr(x, name) -> np.ndarray:
    w = x.waveforms if isinstance(x, EclWaveforms) else np.asarray(x)
    if w.ndim != 3 or w.shape[1:] != (N_CRYSTALS, 31):
        raise ConfigError(f"{name}: waveforms of shape {w.shape}, expected (n_events, {N_CRYSTALS}, 31)")
    return w


def _batch(w: np.ndarray, c0: int, c1: int, mask: np.ndarray | None) -> np.ndarray:
    b = np.ascontiguousarray(np.transpose(w[:, c0:c1, :], (1, 0, 2))).astype(np.float64)  # (C, n, 31)
    if mask is not None:
        b[mask[:, c0:c1].T] = np.nan
    return b


def ks2_all_crystals(real: np.ndarray, fake: np.ndarray, *, real_mask=None, fake_mask=None, chunk: int = 256) -> dict[str, np.ndarray]:
    """KS2 per crystal for all 8736 crystals, in crystal chunks.

    Args:
        real, fake: (n1, 8736, 31) and (n2, 8736, 31) ADC.
        real_mask, fake_mask: optional bool (n, 8736) of waveforms to leave out.
    Returns:
        dict metric -> (8736,) and ``mean`` -> (8736,).
    """
    out = {k: np.empty(N_CRYSTALS) for k in (*METRIC_NAMES, "mean")}
    for c0 in range(0, N_CRYSTALS, chunk):
        c1 = min(c0 + chunk, N_CRYSTALS)
        r = ks2_per_crystal(_batch(real, c0, c1, real_mask), _batch(fake, c0, c1, fake_mask))
        for k, v in r.items():
            out[k][c0:c1] = v
    return out


def mean_waveform_per_ring(w: np.ndarray) -> np.ndarray:
    """Mean waveform of every theta ring: (n, 8736, 31) -> (69, 31) ADC."""
    m = np.asarray(w, dtype=np.float64).mean(axis=0)
    return np.add.reduceat(m, RING_START, axis=0) / RING_SIZES[:, None]


def _summary(ks: dict[str, np.ndarray]) -> dict:
    reg = crystal_region()
    d = {k: float(np.nanmean(v)) for k, v in ks.items()}
    d["per_region"] = {REGION_NAMES[r]: float(np.nanmean(ks["mean"][reg == r])) for r in range(3)}
    return d


def _write_json(path: Path, obj) -> None:
    from b2bkg.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False))


def evaluate_ecl(truth, generated, out_dir, *, truth2=None, seed: int = 0, mask: np.ndarray | None = None) -> dict:
    """Compare generated ECL waveforms with truth; write ``metrics.json``, ``ks2_per_crystal.npz`` and PNGs.

    Args:
        truth, generated, truth2: EclWaveforms or arrays (n_events, 8736, 31) ADC.
        out_dir: folder for the outputs (created).
        seed: fixes the crystal subsample of the histograms and the event-level checks.
        mask: optional bool (n_truth, 8736): truth waveforms to leave out (the selected ones).
    Returns:
        The metrics dictionary written to ``metrics.json``.
    """
    t = _arr(truth, "truth")
    g = _arr(generated, "generated")
    t2 = _arr(truth2, "truth2") if truth2 is not None else None
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != t.shape[:2]:
            raise ConfigError(f"mask: shape {mask.shape}, expected {t.shape[:2]} (truth events x crystals)")
    if t2 is not None:
        n = min(len(t), len(t2), len(g))
        a, b, ma = t[:n], t2[:n], (mask[:n] if mask is not None else None)
        floor_from = "truth2"
        if mask is not None:
            from .select import select_waveforms

            mb = select_waveforms(b)
        else:
            mb = None
    else:
        n = min(len(t) // 2, len(g))
        a, b = t[:n], t[n : 2 * n]
        ma = mask[:n] if mask is not None else None
        mb = mask[n : 2 * n] if mask is not None else None
        floor_from = "split"
    if n < 2:
        raise ConfigError(f"evaluate: {n} waveforms per crystal: need >= 2 (truth {len(t)}, generated {len(g)} events)")
    gg = g[:n]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    ks_model = ks2_all_crystals(a, gg, real_mask=ma)
    ks_floor = ks2_all_crystals(a, b, real_mask=ma, fake_mask=mb)
    from b2bkg.io.atomic import atomic_path

    with atomic_path(out_dir / "ks2_per_crystal.npz") as tmp:
        np.savez(tmp, **{f"model_{k}": v for k, v in ks_model.items()}, **{f"floor_{k}": v for k, v in ks_floor.items()})

    mt, mg = mean_waveform_per_ring(a), mean_waveform_per_ring(gg)
    res = {
        "schema": "b2bkg.ecl.metrics/1",
        "pillar": "ecl",
        "n_waveforms_per_crystal": int(n),
        "n_crystals": N_CRYSTALS,
        "floor_from": floor_from,
        "n_events": {"truth": int(len(t)), "generated": int(len(g)), "truth2": int(len(t2)) if t2 is not None else None},
        "ks2": _summary(ks_model),
        "ks2_floor": _summary(ks_floor),
        "event_level": event_level_checks(a, gg, seed=seed, truth_mask=ma) if n >= 3 else None,
        "pedestal": pedestal_check(a, gg),
        "mean_waveform_rms_diff_adu": float(np.sqrt(np.mean(((mt - mt.mean(1, keepdims=True)) - (mg - mg.mean(1, keepdims=True))) ** 2))),
        "masked_fraction": float(ma.mean()) if ma is not None else 0.0,
    }
    res["ks2_gap_to_floor"] = res["ks2"]["mean"] - res["ks2_floor"]["mean"]

    # plots on a fixed subsample of crystals
    sub_t = make_validation_subset(a, n_crystals=64, n_waveforms=n, seed=seed, mask=ma)
    sub_g = gg[:, sub_t.crystals, :].transpose(1, 0, 2).astype(np.float64)
    cov = pooled_autocovariance(sub_t.waveforms, sub_g)
    met_t, met_g = waveform_metrics(sub_t.waveforms, cov), waveform_metrics(sub_g, cov)
    plots.plot_ks2_per_crystal({"generated": ks_model["mean"]}, out_dir / "ks2_per_crystal.png", floor=ks_floor["mean"], n=n)
    plots.plot_metric_histograms({"truth": met_t, "generated": met_g}, out_dir / "metric_histograms.png", n=n)
    plots.plot_mean_waveforms({"truth": mt, "generated": mg}, out_dir / "mean_waveform_per_ring.png")
    plots.plot_power_bins({"truth": met_t["power"], "generated": met_g["power"]}, out_dir / "power_spectrum_bins.png")
    res["plots"] = ["ks2_per_crystal.png", "metric_histograms.png", "mean_waveform_per_ring.png", "power_spectrum_bins.png"]
    _write_json(out_dir / "metrics.json", res)
    return res
