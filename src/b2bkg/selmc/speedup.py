"""What selective MC buys: classifier metrics, the network's cost and the speed-up in HS06 seconds.

Cost model (seed 003, HS06 s per event): framework overhead 0.79, generation 0.11, detector
simulation 47.23, reconstruction 26.77 (:data:`SEED_COST_HS06`), plus the measured network cost
per event converted with :data:`HS06_PER_CORE` (an assumption, stated with every result: a
current x86 server core scores ~10-15 HS06; we take 12).

* Without the filter every event pays everything: ``c_all = overhead + generation + simulation + reconstruction``
  and every skim-passing event is usable: cost per passing event = ``N c_all / N_pass``.
* With the filter every generated event pays ``c_gen = overhead + generation + network`` and
  every *kept* event pays ``c_sim = simulation + reconstruction``; the kept passing events carry
  weights, so they count as ``N_eff = (sum w)^2 / sum w^2``.
* ``speed-up = (cost per passing event without filter) / (cost per effective passing event with it)``.

:func:`expected_speedup` uses expectations over the keep decisions (smooth curves: E[kept] =
sum p, and for the passing events E[sum w] = N_pass, E[sum w^2] = sum 1/p); :func:`realized_speedup`
uses the weights actually drawn.

The oracle ("the best any classifier can know") is the emulator's own pass probability: each
held-out event is re-run K times (``pass_prob_<skim>`` = k/K) and :func:`oracle_probability`
turns k/K into the empirical-Bayes posterior mean of the true probability (k/K = 0 for a passing
event would otherwise force the weight 1/p_min). Network and oracle are compared with the *same*
keep map :func:`b2bkg.selmc.weighting.keep_probability` (default ``clip(1.5 sqrt(q), p_min, 1)``).

The seed's retention-limited maximum (a perfect classifier, no network cost) is
``c_all / (c_gen + r c_sim)`` at retention r: 19.4x at 4 % with the seed costs
(the issue quotes ~16x, i.e. 1 / (r + c_gen / c_all) with r ~ 5 %).
"""

from __future__ import annotations

import time

import numpy as np

__all__ = [
    "SEED_COST_HS06", "HS06_PER_CORE", "roc_auc", "efficiency_at_retention", "network_cost_s", "expected_speedup",
    "realized_speedup", "perfect_speedup", "speedup_table", "plot_speedup", "infer_repeats", "oracle_probability",
    "scan_scale", "bootstrap_ratio",
]

SEED_COST_HS06 = {"overhead": 0.79, "generation": 0.11, "simulation": 47.23, "reconstruction": 26.77}
HS06_PER_CORE = 12.0


def infer_repeats(pass_prob: np.ndarray, max_repeats: int = 256) -> int:
    """Number of oracle repeats K behind ``pass_prob`` (all values are multiples of 1/K)."""
    q = np.asarray(pass_prob, np.float64)
    for k in range(1, max_repeats + 1):
        if np.allclose(q * k, np.rint(q * k), atol=1e-3):
            return k
    raise ValueError(f"pass_prob: values are not multiples of 1/K for any K <= {max_repeats}")


def oracle_probability(pass_prob: np.ndarray, n_repeats: int | None = None, n_grid: int = 201, n_iter: int = 300) -> np.ndarray:
    """Best estimate of each event's true pass probability from its K oracle repeats (empirical Bayes).

    ``pass_prob = k/K`` is a noisy estimate: with K = 8 an event that passes one time in ten
    shows 0 in 43 % of cases, and a filter keeping it with p_min would give a passing event the
    weight 1/p_min. The best any classifier can know is the posterior mean E[q | k, K] under the
    population's distribution of q, which is fitted here as a discrete prior on ``n_grid`` points
    by the EM algorithm (non-parametric maximum likelihood, Laird 1978), from the repeats only.

    Args:
        pass_prob: (n,) fractions k/K of the repeats that passed.
        n_repeats: K (default: inferred from the values).
    Returns:
        (n,) float64 posterior means, strictly inside (0, 1).
    """
    from scipy.stats import binom

    q = np.asarray(pass_prob, np.float64)
    K = int(n_repeats or infer_repeats(q))
    k = np.clip(np.rint(q * K).astype(np.int64), 0, K)
    cnt = np.bincount(k, minlength=K + 1).astype(np.float64)
    g = np.linspace(0.0, 1.0, n_grid)
    like = binom.pmf(np.arange(K + 1)[:, None], K, g[None, :])  # (K+1, G)
    prior = np.full(n_grid, 1.0 / n_grid)
    for _ in range(n_iter):
        post = like * prior
        post /= post.sum(1, keepdims=True)
        prior = (cnt[:, None] * post).sum(0) / cnt.sum()
    post = like * prior
    post /= post.sum(1, keepdims=True)
    return (post @ g)[k]


def scan_scale(q: np.ndarray, passed: np.ndarray, p_min: float = 0.01, scales=(0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0),
               power: float = 0.5, net_hs06: float = 0.0) -> list[dict]:
    """Expected speed-up of ``p = clip(scale * q**power, p_min, 1)`` for each scale (rows: scale, speedup)."""
    rows = []
    for sc in scales:
        p = np.clip(sc * np.clip(np.asarray(q, np.float64), 0, 1) ** power, p_min, 1.0)
        rows.append({"scale": float(sc), "speedup": expected_speedup(p, passed, net_hs06)["speedup"]})
    return rows


def bootstrap_ratio(p_net: np.ndarray, p_oracle: np.ndarray, passed: np.ndarray, net_hs06: float = 0.0, *, n_boot: int = 200,
                    seed: int = 0) -> dict:
    """Statistical spread of ``speed-up(network) / speed-up(oracle)`` on a finite held-out sample.

    Paired bootstrap over events: each resample draws n events with replacement and evaluates
    :func:`expected_speedup` of both keep maps on the same events (the oracle's posterior means
    are taken as given). Returns ``{"ratio", "std", "q05", "q95", "n_boot"}`` (``ratio``: the
    full-sample value; ``n_boot``: resamples used, those without a passing event are dropped).
    """
    p_net, p_oracle = np.asarray(p_net, np.float64), np.asarray(p_oracle, np.float64)
    passed = np.asarray(passed, bool)
    def ratio(i):
        den = expected_speedup(p_oracle[i], passed[i])["speedup"]
        return expected_speedup(p_net[i], passed[i], net_hs06)["speedup"] / den if den > 0 else np.nan

    n = len(passed)
    full = ratio(np.arange(n))
    rng = np.random.default_rng(seed)
    r = np.array([ratio(rng.integers(0, n, n)) for _ in range(n_boot)], np.float64)
    r = r[np.isfinite(r)]  # resamples without a passing event have no speed-up to compare
    if len(r) < 2:
        return {"ratio": float(full), "std": float("nan"), "q05": float("nan"), "q95": float("nan"), "n_boot": int(len(r))}
    return {"ratio": float(full), "std": float(r.std(ddof=1)), "q05": float(np.quantile(r, 0.05)), "q95": float(np.quantile(r, 0.95)),
            "n_boot": int(len(r))}


def roc_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the ROC curve (ties count one half), optionally weighted; NaN if one class is empty.

    Equals the Mann-Whitney probability P(score_pass > score_fail) (+ 1/2 P(equal)).
    """
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, np.float64).ravel()
    if weights is None:
        n1, n0 = int(y.sum()), int((~y).sum())
        if n1 == 0 or n0 == 0:
            return float("nan")
        r = rankdata(s)
        return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    w = np.asarray(weights, np.float64).ravel()
    order = np.argsort(s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    uniq, inv = np.unique(s, return_inverse=True)
    w1 = np.bincount(inv, weights=w * y, minlength=len(uniq))
    w0 = np.bincount(inv, weights=w * ~y, minlength=len(uniq))
    below0 = np.cumsum(w0) - w0
    tot1, tot0 = w1.sum(), w0.sum()
    if tot1 <= 0 or tot0 <= 0:
        return float("nan")
    return float((w1 * (below0 + 0.5 * w0)).sum() / (tot1 * tot0))


def efficiency_at_retention(y: np.ndarray, score: np.ndarray, retention: float) -> float:
    """Fraction of the passing events among the ``retention`` fraction of events with the highest scores."""
    y = np.asarray(y).astype(bool).ravel()
    n_keep = int(round(retention * len(y)))
    if y.sum() == 0:
        return float("nan")
    top = np.argsort(-np.asarray(score, np.float64), kind="stable")[:n_keep]
    return float(y[top].sum() / y.sum())


def network_cost_s(net, cfg, events, *, threads: int = 1, repeats: int = 3, batch_size: int | None = None) -> dict:
    """Measured network cost per event on ``threads`` CPU threads, feature building included.

    Returns ``{"median_s", "min_s", "cpu_s", "threads", "batch_size", "n_events"}`` (seconds per
    event: wall-clock median and fastest of ``repeats`` passes over ``events`` after one warm-up
    pass, and the median process CPU time, which on a shared machine is the cost without the
    waiting for a core).
    """
    import torch

    from b2bkg.selmc.models.family import predict

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        predict(net, cfg, events.slice(0, min(events.n_events, 64)), batch_size)
        times, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            predict(net, cfg, events, batch_size)
            times.append((time.perf_counter() - t0) / max(events.n_events, 1))
            cpu.append((time.process_time() - c0) / max(events.n_events, 1))
    finally:
        torch.set_num_threads(old)
    return {"median_s": float(np.median(times)), "min_s": float(np.min(times)), "cpu_s": float(np.median(cpu)), "threads": threads,
            "batch_size": int(batch_size or cfg.predict_batch), "n_events": int(events.n_events)}


def _costs(net_hs06: float, cost: dict | None):
    c = {**SEED_COST_HS06, **(cost or {})}
    c_gen = c["overhead"] + c["generation"] + net_hs06
    c_sim = c["simulation"] + c["reconstruction"]
    c_all = c["overhead"] + c["generation"] + c_sim
    return c_all, c_gen, c_sim


def expected_speedup(p: np.ndarray, passed: np.ndarray, net_hs06: float = 0.0, cost: dict | None = None) -> dict:
    """Speed-up of keeping each event with probability ``p`` (weight 1/p), in expectation.

    Args:
        p: keep probability per event (n,), in (0, 1] (0 only in threshold mode, where weights are 1).
        passed: skim decision per event (n,) bool.
        net_hs06: network cost per event in HS06 s.
    Returns:
        dict with ``speedup``, ``retention`` (kept fraction), ``n_eff_frac`` (N_eff / N_pass),
        ``cost_per_pass_hs06`` without and with the filter, ``max_weight``.
    """
    p = np.asarray(p, np.float64)
    passed = np.asarray(passed, bool)
    n, n_pass = len(p), int(passed.sum())
    c_all, c_gen, c_sim = _costs(net_hs06, cost)
    pp = p[passed]
    kept_pass = pp > 0
    if not kept_pass.any():
        return {"speedup": 0.0, "retention": float(p.mean()), "n_eff_frac": 0.0, "cost_without_hs06": c_all * n / max(n_pass, 1),
                "cost_with_hs06": float("inf"), "max_weight": 0.0}
    threshold_mode = np.all((p == 0) | (p == 1))
    if threshold_mode:
        n_eff = float(kept_pass.sum())  # unit weights: the events the cut keeps
    else:
        n_eff = n_pass**2 / float((1.0 / pp).sum())
    cost_with = (n * c_gen + c_sim * p.sum()) / n_eff
    cost_without = n * c_all / n_pass
    return {"speedup": float(cost_without / cost_with), "retention": float(p.mean()), "n_eff_frac": float(n_eff / n_pass),
            "cost_without_hs06": float(cost_without), "cost_with_hs06": float(cost_with),
            "max_weight": float((1.0 / p[p > 0]).max())}


def realized_speedup(n_generated: int, n_pass_true: int, n_kept: int, weights_pass: np.ndarray, net_hs06: float = 0.0,
                     cost: dict | None = None) -> dict:
    """Speed-up of one actual filtered sample.

    Args:
        n_generated: events fed to the filter (N).
        n_pass_true: passing events among them without filtering (or an estimate from an
            independent sample of the same size).
        n_kept: events written by the filter (all of them pay simulation + reconstruction).
        weights_pass: weights of the kept events that pass the skim.
    """
    w = np.asarray(weights_pass, np.float64)
    c_all, c_gen, c_sim = _costs(net_hs06, cost)
    n_eff = w.sum() ** 2 / (w**2).sum() if len(w) else 0.0
    cost_with = (n_generated * c_gen + n_kept * c_sim) / max(n_eff, 1e-12)
    cost_without = n_generated * c_all / max(n_pass_true, 1)
    return {"speedup": float(cost_without / cost_with), "n_eff": float(n_eff), "sum_w": float(w.sum()),
            "retention": n_kept / max(n_generated, 1), "cost_with_hs06": float(cost_with), "cost_without_hs06": float(cost_without)}


def perfect_speedup(retention: float, net_hs06: float = 0.0, cost: dict | None = None) -> float:
    """Retention-limited maximum: a perfect classifier keeping exactly the passing fraction."""
    c_all, c_gen, c_sim = _costs(net_hs06, cost)
    return float(c_all / (c_gen + retention * c_sim))


def speedup_table(rows: list[dict], columns: list[str]) -> str:
    """Markdown table of ``rows`` (dicts) with the given ``columns`` (floats printed with 4 significant digits)."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def plot_speedup(curve_sample: list[dict], curve_threshold: list[dict], path, *, title: str = "") -> None:
    """Speed-up vs p_min (network and oracle, importance sampling) and vs threshold, with the bias beside it.

    ``curve_sample`` rows: ``p_min``, ``speedup``, ``oracle_speedup``, ``min_chi2_p`` (smallest
    chi2 p-value over the monitored distributions, or NaN), ``auc``, ``bayes_auc``.
    ``curve_threshold`` rows: ``threshold``, ``speedup``, ``min_chi2_p``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex="col", gridspec_kw={"height_ratios": [2, 1]})
    if curve_sample:
        x = [r["p_min"] for r in curve_sample]
        a = axes[0, 0]
        a.plot(x, [r["speedup"] for r in curve_sample], "o-", label=f"network (AUC {curve_sample[0].get('auc', float('nan')):.3f})")
        a.plot(x, [r["oracle_speedup"] for r in curve_sample], "s--",
               label=f"oracle pass_prob (Bayes AUC {curve_sample[0].get('bayes_auc', float('nan')):.3f})")
        a.set_xscale("log")
        a.set_ylabel("speed-up (HS06 s per effective passing event)")
        a.set_title("importance sampling p = clip(scale * q**power, p_min, 1)")
        a.legend()
        b = axes[1, 0]
        b.plot(x, [max(r.get("min_chi2_p", np.nan), 1e-300) for r in curve_sample], "o-")
        b.axhline(1e-3, color="r", ls=":", label="p = 0.001")
        b.set_yscale("log")
        b.set_xlabel("p_min")
        b.set_ylabel("smallest chi2 p-value")
        b.legend()
    if curve_threshold:
        x = [r["threshold"] for r in curve_threshold]
        a = axes[0, 1]
        a.plot(x, [r["speedup"] for r in curve_threshold], "o-", color="C2", label="network, hard threshold (unit weights)")
        a.set_title("hard threshold (seed's first version)")
        a.legend()
        b = axes[1, 1]
        b.plot(x, [max(r.get("min_chi2_p", np.nan), 1e-300) for r in curve_threshold], "o-", color="C2")
        b.axhline(1e-3, color="r", ls=":")
        b.set_yscale("log")
        b.set_xlabel("threshold")
        b.set_ylabel("smallest chi2 p-value (shape)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ the study behind the README numbers
def _read_all(path):
    from b2bkg.io import open_file

    with open_file(path) as f:
        return f.read_smc()


def compare_architectures(runs: dict, events, *, skim: str = "fei_b0", retention: float = 0.10, p_min: float = 0.01,
                          n_cost_events: int = 1024, hs06_per_core: float = HS06_PER_CORE) -> list[dict]:
    """One row per trained run: AUC, efficiency at fixed retention, cost per event (1 thread), speed-up.

    Args:
        runs: ``{label: run folder}`` of smc-nn runs.
        events: held-out events with ``passed_<skim>`` (and ``pass_prob_<skim>`` for the Bayes AUC row).
        retention: kept fraction at which the efficiency (fraction of passing events kept) is read.
    """
    from b2bkg.selmc.models.family import load_run, predict
    from b2bkg.selmc.weighting import FilterConfig, keep_probability

    y = events.per_event[f"passed_{skim}"].astype(bool)
    rows = []
    for label, run in runs.items():
        net, cfg = load_run(run)
        score = predict(net, cfg, events)[:, list(cfg.skims).index(skim)]
        cost = network_cost_s(net, cfg, events.slice(0, min(n_cost_events, events.n_events)), threads=1, repeats=3)
        p = keep_probability(score, FilterConfig(p_min=p_min))
        sp = expected_speedup(p, y, net_hs06=cost["cpu_s"] * hs06_per_core)
        rows.append({"arch": label, "params": sum(q.numel() for q in net.parameters()), "auc": roc_auc(y, score),
                     f"eff@{retention:g}": efficiency_at_retention(y, score, retention), "ms_per_event": 1e3 * cost["median_s"],
                     "cpu_ms_per_event": 1e3 * cost["cpu_s"],
                     f"speedup@pmin{p_min:g}": sp["speedup"]})
    key = f"pass_prob_{skim}"
    if key in events.per_event:
        q = oracle_probability(events.per_event[key])
        sp = expected_speedup(keep_probability(q, FilterConfig(p_min=p_min)), y)
        rows.append({"arch": "oracle (pass_prob)", "params": 0, "auc": roc_auc(y, q),
                     f"eff@{retention:g}": efficiency_at_retention(y, q, retention), "ms_per_event": 0.0, "cpu_ms_per_event": 0.0,
                     f"speedup@pmin{p_min:g}": sp["speedup"]})
    return rows


def selmc_study(run_dir, test_path, ref_path, out_dir, *, skim: str = "fei_b0", p_mins=(0.003, 0.01, 0.03, 0.1),
                thresholds=(0.05, 0.1, 0.2, 0.3, 0.5), default_p_min: float = 0.01, default_threshold: float = 0.2,
                seed: int = 1, hs06_per_core: float = HS06_PER_CORE, n_bins: int = 20, n_boot: int = 200) -> dict:
    """Speed-up vs oracle and bias of one trained network on a held-out sample, against an independent reference.

    Writes ``metrics.json``, ``speedup.png`` (speed-up vs p_min / threshold with the smallest chi2
    p-value beside it, oracle and Bayes AUC on the same plot) and ``distributions.png`` (the
    monitored distributions with ratio panels) into ``out_dir``; returns the metrics.
    The keep decisions are those of :func:`b2bkg.selmc.weighting.filter_file` with ``seed``.
    Each p_min row carries a paired bootstrap (``n_boot`` resamples, :func:`bootstrap_ratio`) of
    the network / oracle ratio; the network's scores are saved as ``scores.npz`` (with
    ``event_id``, ``passed`` and the oracle's posterior means) for further analysis.
    """
    import json
    from pathlib import Path

    from b2bkg.selmc.bias import compare_samples, plot_comparison
    from b2bkg.selmc.models.family import load_run, predict
    from b2bkg.selmc.weighting import FilterConfig, event_uniforms, keep_probability

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    test, ref = _read_all(test_path), _read_all(ref_path)
    net, cfg = load_run(run_dir)
    j = list(cfg.skims).index(skim)
    t0 = time.perf_counter()
    score = predict(net, cfg, test)[:, j].astype(np.float64)
    t_score = time.perf_counter() - t0
    cost = network_cost_s(net, cfg, test.slice(0, min(2048, test.n_events)), threads=1, repeats=3)
    net_hs06 = cost["cpu_s"] * hs06_per_core  # HS06 s are CPU seconds
    y = test.per_event[f"passed_{skim}"].astype(bool)
    n, n_ref = test.n_events, ref.n_events
    pe, rpe = test.per_event, ref.per_event
    q = pe.get(f"pass_prob_{skim}")
    q_oracle = oracle_probability(q) if q is not None else None
    u = event_uniforms(pe["event_id"], seed)
    metrics = {
        "pillar": "smc", "skim": skim, "n_test": n, "n_ref": n_ref, "n_pass_test": int(y.sum()), "n_pass_ref": int(rpe[f"passed_{skim}"].sum()),
        "auc": roc_auc(y, score), "bayes_auc": roc_auc(y, q) if q is not None else None,
        "network_cost_s_per_event_1thread": cost, "hs06_per_core": hs06_per_core, "network_hs06": net_hs06,
        "scoring_wall_s_all_threads": t_score, "perfect_speedup_at_test_retention": perfect_speedup(float(y.mean()), net_hs06),
        "unfiltered_vs_ref": {k: v for k, v in compare_samples(pe, np.ones(n), n, rpe, n_ref, skim, n_bins=n_bins).items()},
        "sample": [], "threshold": [], "keep_map": {"scale": FilterConfig().scale, "power": FilterConfig().power},
        "scale_scan": scan_scale(score, y, default_p_min, net_hs06=net_hs06),
        "oracle_scale_scan": scan_scale(q_oracle, y, default_p_min) if q is not None else None,
    }
    for pm in p_mins:
        p = keep_probability(score, FilterConfig(p_min=pm))
        w = np.where(u < p, 1.0 / p, 0.0)
        cmp = compare_samples(pe, w, n, rpe, n_ref, skim, n_bins=n_bins)
        row = {"p_min": pm, **{k: v for k, v in expected_speedup(p, y, net_hs06).items()},
               "realized": realized_speedup(n, int(y.sum()), int((w > 0).sum()), w[y & (w > 0)], net_hs06),
               "max_weight_kept": float(w.max()), "chi2": {k: v for k, v in cmp.items() if k != "pass_count"},
               "pass_count": cmp["pass_count"], "auc": metrics["auc"], "bayes_auc": metrics["bayes_auc"]}
        row["min_chi2_p"] = min(v["p_value"] for v in row["chi2"].values())
        if q is not None:
            p_or = keep_probability(q_oracle, FilterConfig(p_min=pm))
            row["oracle_speedup"] = expected_speedup(p_or, y)["speedup"]
            row["fraction_of_oracle"] = row["speedup"] / row["oracle_speedup"]
            row["fraction_of_oracle_bootstrap"] = bootstrap_ratio(p, p_or, y, net_hs06, n_boot=n_boot, seed=seed)
        metrics["sample"].append(row)
    for thr in thresholds:
        p = keep_probability(score, FilterConfig(mode="threshold", threshold=thr))
        cmp_shape = compare_samples(pe, p, n, rpe, n_ref, skim, n_bins=n_bins, shape_only=True)
        row = {"threshold": thr, **expected_speedup(p, y, net_hs06), "chi2_shape": {k: v for k, v in cmp_shape.items() if k != "pass_count"},
               "pass_count": cmp_shape["pass_count"]}
        row["min_chi2_p"] = min(v["p_value"] for v in row["chi2_shape"].values())
        metrics["threshold"].append(row)
    plot_speedup(metrics["sample"], metrics["threshold"], out / "speedup.png",
                 title=f"{skim}: {n} held-out mixed events, network {cost['cpu_s'] * 1e3:.2f} CPU ms/event x {hs06_per_core:g} HS06/core")
    p = keep_probability(score, FilterConfig(p_min=default_p_min))
    w = np.where(u < p, 1.0 / p, 0.0)
    thr_w = keep_probability(score, FilterConfig(mode="threshold", threshold=default_threshold))
    lab_s, lab_t = f"filtered + weighted (p_min={default_p_min:g})", f"hard threshold {default_threshold:g} (area-normalized)"
    res = {lab_s: compare_samples(pe, w, n, rpe, n_ref, skim, n_bins=n_bins),
           lab_t: {**compare_samples(pe, thr_w, n, rpe, n_ref, skim, n_bins=n_bins, shape_only=True), "_shape_only": True},
           "held-out, unfiltered": metrics["unfiltered_vs_ref"]}
    plot_comparison([("held-out, unfiltered", pe, np.ones(n), n), (lab_s, pe, w, n), (lab_t, pe, thr_w, n)], ("reference", rpe, n_ref),
                    skim, out / "distributions.png", results=res, n_bins=n_bins, title=f"{skim}: skim-passing events")
    np.savez_compressed(out / "scores.npz", event_id=np.asarray(pe["event_id"]), score=score, passed=y,
                        q_oracle=q_oracle if q_oracle is not None else np.full(n, np.nan))
    with open(out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=1, default=float)
    return metrics
