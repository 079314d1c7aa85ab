"""Calibration of the PXD truth simulator against the published Geant4 reference.

:func:`summarize` reduces simulated digits to the quantities of the reference table
(shared/REFERENCE.md; ``b2bkg/data/pxd_geant4_reference.json``); :func:`calibrate` simulates
``n_events`` frames and returns every quantity with its reference value, tolerance and verdict;
:func:`format_table` prints them side by side.

Checks (issue "First slice", part 2): layer occupancies within 5 %; per-sensor occupancy profile
Pearson r >= 0.8 within each layer; ladder max/min 1.26-1.30 (we allow 1.20-1.36) with the
minimum at phi 135-210 deg; forward/backward (sensor .1 / .2) within 0.05; per-image occupancy
quantiles 10/50/90 % within 20 %; fraction of images above 2 % occupancy below 1e-3 (needs many
events to resolve the reference's 1e-4); fired-pixel charge median, mean, q90, q99 within 10 %,
mode at threshold; size-1 cluster fraction 30-50 %, mean cluster size 2.5-4 (8-connected).

Example:
    >>> ref = load_reference()
    >>> round(ref["layer_occupancy"][0], 4)
    0.0149
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

from b2bkg.io.events import N_SENSORS, PxdDigits

from . import geometry as geo

__all__ = ["load_reference", "summarize", "calibrate", "format_table", "CHECKS"]

REFERENCE_SAMPLE = "GEANT4 (reference)"
PIXELS_PER_SENSOR = geo.N_PIXELS
L1 = geo.LAYER == 1
L2 = geo.LAYER == 2


@lru_cache(maxsize=1)
def _reference_json() -> dict:
    text = resources.files("b2bkg.data").joinpath("pxd_geant4_reference.json").read_text()
    return json.loads(text)


def load_reference() -> dict:
    """The Geant4 reference reduced to the quantities :func:`summarize` computes (fractions, ADU)."""
    r = _reference_json()["samples"][REFERENCE_SAMPLE]
    occ = np.array(r["mean_occupancy_per_sensor"])
    counts = np.array(r["charge_hist"]["counts"], dtype=np.float64)
    edges = np.array(r["charge_hist"]["edges_adu"])[: len(counts)]
    q = r["image_occupancy"]["quantiles"]
    out = _profile_stats(occ)
    out.update(
        occupancy_per_sensor=occ,
        mean_occupancy=r["mean_occupancy_all_sensors"],
        layer_occupancy=(r["mean_occupancy_layer1"], r["mean_occupancy_layer2"]),
        image_q10=q["10"], image_q50=q["50"], image_q90=q["90"],
        frac_images_above_2pct=r["image_occupancy"]["overflow_ge_0.02"] / r["n_images"],
        charge_median=r["charge_hist"]["quantiles_adu_lower_edge"]["50"],
        charge_mean=r["charge_hist"]["mean_adu_lower_edge"],
        charge_q90=r["charge_hist"]["quantiles_adu_lower_edge"]["90"],
        charge_q99=r["charge_hist"]["quantiles_adu_lower_edge"]["99"],
        charge_mode=int(edges[np.argmax(counts)]),
        charge_p_threshold=counts[0] / counts.sum(),
        layer_mean_charge=(float(np.mean(np.array(r["mean_fired_adc_per_sensor"])[L1])),
                           float(np.mean(np.array(r["mean_fired_adc_per_sensor"])[L2]))),
        charge_hist=counts / counts.sum(),
        charge_edges=edges,
    )
    return out


def _profile_stats(occ: np.ndarray) -> dict:
    """Ladder profile statistics of per-sensor mean occupancies, shape (40,)."""
    out = {}
    for layer, m in ((1, L1), (2, L2)):
        o = occ[m]
        lad = 0.5 * (o[0::2] + o[1::2])  # ladder mean (sensors .1 and .2)
        phi = np.degrees(geo.LADDER_PHI_RAD[m][0::2])
        out[f"l{layer}_ladder_max_min"] = float(lad.max() / lad.min())
        out[f"l{layer}_ladder_min_phi"] = float(phi[np.argmin(lad)])
        out[f"l{layer}_fwd_bwd"] = float(o[0::2].sum() / o[1::2].sum())
    return out


def summarize(digits: PxdDigits, *, threshold_adu: int = 7, clusters: bool = True) -> dict:
    """Reference quantities of a sample of simulated (or generated) frames.

    Args:
        digits: events of zero-suppressed digits.
        threshold_adu: the zero-suppression threshold (the mode is expected there).
        clusters: also compute cluster statistics (8-connected, :mod:`b2bkg.pxd.clusters`).
    Returns:
        dict of scalars (fractions, ADU) plus ``occupancy_per_sensor`` (40,) and
        ``image_occupancy`` (n_events, 40).
    """
    n = digits.n_events
    ev = digits.event_index()
    img = np.bincount(ev * N_SENSORS + digits.sensor.astype(np.int64), minlength=n * N_SENSORS)
    img = img.reshape(n, N_SENSORS) / PIXELS_PER_SENSOR
    occ = img.mean(axis=0)
    out = _profile_stats(occ)
    flat = img.ravel()
    spread = img.std(axis=0) / np.maximum(occ, 1e-12)
    ch = digits.charge.astype(np.int64)
    hist = np.bincount(ch, minlength=256).astype(np.float64)
    cdf = np.cumsum(hist) / max(hist.sum(), 1)

    def q(p):
        return int(np.searchsorted(cdf, p))

    layer_ch = []
    for m in (L1, L2):
        sel = m[digits.sensor]
        layer_ch.append(float(ch[sel].mean()) if sel.any() else float("nan"))
    out.update(
        occupancy_per_sensor=occ,
        image_occupancy=img,
        mean_occupancy=float(occ.mean()),
        layer_occupancy=(float(occ[L1].mean()), float(occ[L2].mean())),
        image_q10=float(np.quantile(flat, 0.1)), image_q50=float(np.quantile(flat, 0.5)),
        image_q90=float(np.quantile(flat, 0.9)),
        frac_images_above_2pct=float(np.mean(flat >= 0.02)),
        l1_spread=float(spread[L1].mean()), l2_spread=float(spread[L2].mean()),
        charge_median=q(0.5), charge_mean=float(ch.mean()) if len(ch) else float("nan"),
        charge_q90=q(0.9), charge_q99=q(0.99),
        charge_mode=int(np.argmax(hist)),
        charge_p_threshold=float(hist[threshold_adu] / max(hist.sum(), 1)),
        layer_mean_charge=tuple(layer_ch),
        charge_hist=hist[threshold_adu:] / max(hist.sum(), 1),
        fired_per_event=float(len(ch) / max(n, 1)),
    )
    if clusters:
        from .clusters import find_clusters

        c = find_clusters(digits)
        out.update(cluster_size1_fraction=float(np.mean(c.size == 1)), cluster_mean_size=float(c.size.mean()),
                   cluster_mean_v_extent=float(c.v_extent.mean()), cluster_mean_u_extent=float(c.u_extent.mean()),
                   cluster_frac_size_gt20=float(np.mean(c.size > 20)))
    return out


# (name, label, how to read the simulated value, reference key or fixed target, rule, tolerance)
# rules: "rel" |sim/ref - 1| <= tol; "abs" |sim - ref| <= tol; "range" lo <= sim <= hi; "min" sim >= tol
CHECKS = [
    ("l1_occ", "layer-1 occupancy (%)", lambda s: 100 * s["layer_occupancy"][0], lambda r: 100 * r["layer_occupancy"][0], "rel", 0.05),
    ("l2_occ", "layer-2 occupancy (%)", lambda s: 100 * s["layer_occupancy"][1], lambda r: 100 * r["layer_occupancy"][1], "rel", 0.05),
    ("l1_r", "layer-1 per-sensor profile Pearson r", None, None, "min", 0.8),
    ("l2_r", "layer-2 per-sensor profile Pearson r", None, None, "min", 0.8),
    ("l1_maxmin", "layer-1 ladder max/min", lambda s: s["l1_ladder_max_min"], lambda r: r["l1_ladder_max_min"], "range", (1.20, 1.36)),
    ("l2_maxmin", "layer-2 ladder max/min", lambda s: s["l2_ladder_max_min"], lambda r: r["l2_ladder_max_min"], "range", (1.20, 1.36)),
    ("l1_minphi", "layer-1 phi of min ladder (deg)", lambda s: s["l1_ladder_min_phi"], lambda r: r["l1_ladder_min_phi"], "range", (135, 210)),
    ("l2_minphi", "layer-2 phi of min ladder (deg)", lambda s: s["l2_ladder_min_phi"], lambda r: r["l2_ladder_min_phi"], "range", (135, 210)),
    ("l1_fb", "layer-1 forward/backward", lambda s: s["l1_fwd_bwd"], lambda r: r["l1_fwd_bwd"], "abs", 0.05),
    ("l2_fb", "layer-2 forward/backward", lambda s: s["l2_fwd_bwd"], lambda r: r["l2_fwd_bwd"], "abs", 0.05),
    ("img_q10", "image occupancy q10 (%)", lambda s: 100 * s["image_q10"], lambda r: 100 * r["image_q10"], "rel", 0.20),
    ("img_q50", "image occupancy q50 (%)", lambda s: 100 * s["image_q50"], lambda r: 100 * r["image_q50"], "rel", 0.20),
    ("img_q90", "image occupancy q90 (%)", lambda s: 100 * s["image_q90"], lambda r: 100 * r["image_q90"], "rel", 0.20),
    ("img_gt2", "images above 2 % occupancy", lambda s: s["frac_images_above_2pct"], lambda r: r["frac_images_above_2pct"], "range", (0.0, 1e-3)),
    ("l1_spread", "layer-1 within-sensor spread", lambda s: s["l1_spread"], lambda r: 0.065, "abs", 0.02),
    ("l2_spread", "layer-2 within-sensor spread", lambda s: s["l2_spread"], lambda r: 0.115, "abs", 0.03),
    ("q_median", "charge median (ADU)", lambda s: s["charge_median"], lambda r: r["charge_median"], "rel", 0.10),
    ("q_mean", "charge mean (ADU)", lambda s: s["charge_mean"], lambda r: r["charge_mean"], "rel", 0.10),
    ("q_q90", "charge q90 (ADU)", lambda s: s["charge_q90"], lambda r: r["charge_q90"], "rel", 0.10),
    ("q_q99", "charge q99 (ADU)", lambda s: s["charge_q99"], lambda r: r["charge_q99"], "rel", 0.10),
    ("q_mode", "charge mode (ADU)", lambda s: s["charge_mode"], lambda r: r["charge_mode"], "abs", 0),
    ("size1", "size-1 cluster fraction", lambda s: s.get("cluster_size1_fraction", np.nan), lambda r: None, "range", (0.30, 0.50)),
    ("csize", "mean cluster size (pixels)", lambda s: s.get("cluster_mean_size", np.nan), lambda r: None, "range", (2.5, 4.0)),
]


def _pearson(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def compare(sim: dict, ref: dict | None = None) -> list[dict]:
    """Every check of :data:`CHECKS`: rows with name, label, sim, ref, tolerance text and pass."""
    ref = ref or load_reference()
    rows = []
    for name, label, fs, fr, rule, tol in CHECKS:
        if name in ("l1_r", "l2_r"):
            m = L1 if name == "l1_r" else L2
            s, r = _pearson(sim["occupancy_per_sensor"][m], ref["occupancy_per_sensor"][m]), 1.0
        else:
            s, r = fs(sim), fr(ref)
        if rule == "rel":
            ok, tol_s = abs(s / r - 1) <= tol, f"+-{100 * tol:.0f} %"
        elif rule == "abs":
            ok, tol_s = abs(s - r) <= tol, f"+-{tol:g}"
        elif rule == "min":
            ok, tol_s = s >= tol, f">= {tol:g}"
        else:
            ok, tol_s = tol[0] <= s <= tol[1], f"[{tol[0]:g}, {tol[1]:g}]"
        rows.append({"name": name, "label": label, "sim": float(s), "ref": None if r is None else float(r),
                     "tolerance": tol_s, "pass": bool(ok)})
    return rows


def calibrate(n_events: int = 200, seed: int = 1, *, config=None, conditions=None, chunk_size: int = 50) -> dict:
    """Simulate ``n_events`` frames and compare them with the Geant4 reference.

    Returns:
        dict with ``rows`` (see :func:`compare`), ``summary`` (scalars of :func:`summarize`),
        ``all_pass`` (bool), ``n_events``, ``seed``, ``events_per_s`` (simulation only).
    """
    import time

    from b2bkg.core.progress import progress

    from .simulate import iter_pxd_chunks

    parts, t_sim = [], 0.0
    bar = progress(total=n_events, desc="calibrate pxd", unit="event")
    it = iter_pxd_chunks(n_events, seed, config=config, conditions=conditions, chunk_size=chunk_size)
    try:
        while True:
            t0 = time.perf_counter()
            try:
                digits, _ = next(it)
            except StopIteration:
                break
            t_sim += time.perf_counter() - t0
            parts.append(digits)
            bar.update(digits.n_events)
    finally:
        bar.close()
    digits = PxdDigits.concat(parts)
    summ = summarize(digits)
    rows = compare(summ)
    scalars = {k: v for k, v in summ.items() if not isinstance(v, np.ndarray)}
    return {"rows": rows, "summary": scalars, "all_pass": all(r["pass"] for r in rows), "n_events": n_events,
            "seed": seed, "events_per_s": n_events / t_sim if t_sim > 0 else float("nan"),
            "occupancy_per_sensor": summ["occupancy_per_sensor"]}


def format_table(result: dict) -> str:
    """Side-by-side text table of :func:`calibrate`'s result."""
    lines = [f"PXD truth simulator vs Geant4 reference ({result['n_events']} events, seed {result['seed']})",
             f"{'quantity':38s} {'simulator':>10s} {'reference':>10s} {'tolerance':>14s}  verdict"]
    for r in result["rows"]:
        ref = "-" if r["ref"] is None else f"{r['ref']:.4g}"
        lines.append(f"{r['label']:38s} {r['sim']:10.4g} {ref:>10s} {r['tolerance']:>14s}  {'PASS' if r['pass'] else 'FAIL'}")
    s = result["summary"]
    lines.append(f"fired pixels per event {s['fired_per_event']:.0f} (reference ~69 300); "
                 f"mean charge L1/L2 {s['layer_mean_charge'][0]:.1f}/{s['layer_mean_charge'][1]:.1f} ADU (reference 21.0/22.7); "
                 f"{result['events_per_s']:.1f} events/s")
    n_fail = sum(not r["pass"] for r in result["rows"])
    lines.append("ALL PASS" if n_fail == 0 else f"{n_fail} check(s) FAIL")
    return "\n".join(lines)
