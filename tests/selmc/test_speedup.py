"""Speed-up accounting, classifier metrics and the weighted-histogram chi2 against exact answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from b2bkg.selmc.bias import compare_samples, quantile_edges, weighted_chi2, weighted_hist
from b2bkg.selmc.speedup import (
    SEED_COST_HS06, bootstrap_ratio, efficiency_at_retention, expected_speedup, infer_repeats, oracle_probability, perfect_speedup, realized_speedup,
    roc_auc, scan_scale,
)

C_ALL = 0.79 + 0.11 + 47.23 + 26.77
C_GEN = 0.79 + 0.11
C_SIM = 47.23 + 26.77


def test_roc_auc_exact():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(y, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert roc_auc(y, np.array([0.1, 0.3, 0.2, 0.4])) == 0.75
    assert np.isnan(roc_auc(np.zeros(3), np.arange(3.0)))
    # weighted == unweighted with repeated rows; compare with scipy's Mann-Whitney U
    rng = np.random.default_rng(1)
    yy, s = rng.random(300) < 0.3, rng.normal(size=300) + 0.5 * (rng.random(300) < 0.3)
    u = stats.mannwhitneyu(s[yy], s[~yy]).statistic / (yy.sum() * (~yy).sum())
    assert roc_auc(yy, s) == pytest.approx(u)
    assert roc_auc(yy, s, np.ones(300)) == pytest.approx(u)
    w = rng.integers(1, 4, 300)
    assert roc_auc(yy, s, w.astype(float)) == pytest.approx(roc_auc(np.repeat(yy, w), np.repeat(s, w)))


def test_efficiency_at_retention():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1], bool)
    s = np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.1, 0.1, 0.1, 0.1, 0.05])
    assert efficiency_at_retention(y, s, 0.2) == pytest.approx(2 / 3)
    assert efficiency_at_retention(y, s, 1.0) == 1.0


def test_speedup_cost_model():
    assert sum(SEED_COST_HS06.values()) == pytest.approx(C_ALL)
    n, r = 10000, 0.04
    passed = np.arange(n) < n * r
    # keep everything: no gain, the network only costs
    s1 = expected_speedup(np.ones(n), passed, net_hs06=0.0)
    assert s1["speedup"] == pytest.approx(1.0) and s1["n_eff_frac"] == 1.0
    # a perfect classifier with p_min = 0 keeps exactly the passing events (19.4x at 4 % with the seed costs)
    p = np.where(passed, 1.0, 1e-9)
    assert expected_speedup(np.where(passed, 1.0, 0.0), passed)["speedup"] == pytest.approx(C_ALL / (C_GEN + r * C_SIM))
    assert perfect_speedup(0.04) == pytest.approx(C_ALL / (C_GEN + 0.04 * C_SIM)) and 19 < perfect_speedup(0.04) < 20
    # uniform p = q: cost ~ c_gen + q c_sim per event, N_eff = q N_pass
    q = 0.25
    e = expected_speedup(np.full(n, q), passed)
    assert e["n_eff_frac"] == pytest.approx(q)
    assert e["speedup"] == pytest.approx((n * C_ALL / (n * r)) / ((n * C_GEN + q * n * C_SIM) / (q * n * r)))
    assert e["max_weight"] == pytest.approx(4.0)
    # realized: weights of kept passing events
    rz = realized_speedup(n, 400, 2500, np.full(100, 4.0))
    assert rz["n_eff"] == pytest.approx(100) and rz["speedup"] == pytest.approx((n * C_ALL / 400) / ((n * C_GEN + 2500 * C_SIM) / 100))
    # network cost lowers the gain
    assert expected_speedup(np.full(n, q), passed, net_hs06=1.0)["speedup"] < e["speedup"]


def test_weighted_chi2_exact_and_calibrated():
    # identical histograms: chi2 = 0, p = 1
    r = weighted_chi2(np.array([10.0, 20.0]), np.array([10.0, 20.0]), 100, np.array([10.0, 20.0]), 100)
    assert r.chi2 == 0 and r.ndf == 2 and r.p_value == pytest.approx(1.0)
    # one bin: (W/n - R/m)^2 / (S/n^2 + R/m^2)
    r = weighted_chi2(np.array([30.0]), np.array([90.0]), 100, np.array([20.0]), 100)
    assert r.chi2 == pytest.approx((0.1) ** 2 / (90 / 1e4 + 20 / 1e4)) and r.ndf == 1
    # calibration: importance-sampled samples from the same parent are consistent with the reference
    rng = np.random.default_rng(7)
    pv = []
    for _ in range(60):
        x_ref, x = rng.normal(size=3000), rng.normal(size=3000)
        p = np.clip(0.1 + 0.8 * (x > 0.5), 0.1, 1)
        keep = rng.random(3000) < p
        edges = quantile_edges(x_ref, 10)
        W, S = weighted_hist(x[keep], 1 / p[keep], edges)
        R, _ = weighted_hist(x_ref, None, edges)
        pv.append(weighted_chi2(W, S, 3000, R, 3000).p_value)
    assert 0.2 < np.mean(pv) < 0.8 and np.mean(np.array(pv) < 0.05) < 0.2
    # a hard cut is caught (shape test)
    keep = x > 0.0
    W, S = weighted_hist(x[keep], None, edges)
    assert weighted_chi2(W, S, 3000, R, 3000, shape_only=True).p_value < 1e-6


def test_quantile_edges_integer():
    e = quantile_edges(np.array([3, 3, 4, 5, 5, 5, 6, 9]), 4, integer=True)
    assert e[0] == 2.5 and e[-1] == 9.5 and np.allclose(e % 1, 0.5)


def test_compare_samples_pass_count():
    rng = np.random.default_rng(3)

    def pe(n):
        passed = rng.random(n) < 0.1
        return {"passed_fei_b0": passed, "mbc_fei_b0": np.where(passed, 5.27 + 0.01 * rng.normal(size=n), np.nan),
                "de_fei_b0": rng.normal(size=n) * 0.05, "tag_p_fei_b0": rng.random(n) + 0.1,
                "n_tracks": rng.integers(3, 12, n).astype(float), "n_clusters": rng.integers(3, 12, n).astype(float),
                "e_visible": 8 + rng.normal(size=n)}

    test, ref = pe(5000), pe(5000)
    res = compare_samples(test, np.ones(5000), 5000, ref, 5000, "fei_b0", n_bins=8)
    assert set(res) >= {"mbc", "delta_e", "tag_p", "n_tracks", "n_clusters", "e_visible", "pass_count"}
    assert abs(res["pass_count"]["ratio"] - 1) < 0.15
    assert all(res[k]["p_value"] > 1e-4 for k in ("mbc", "delta_e", "tag_p", "e_visible"))


def _bimodal_population(n=40000, seed=3):
    """True pass probabilities: most events ~0.003, 6 % likely passers ~0.6 (what the emulator gives)."""
    rng = np.random.default_rng(seed)
    hi = rng.random(n) < 0.06
    q = np.where(hi, rng.beta(6, 4, n), rng.beta(0.3, 100, n))
    return q, rng


def test_oracle_probability_beats_raw_fraction():
    q, rng = _bimodal_population()
    K = 8
    frac = (rng.binomial(K, q) / K).astype(np.float32)
    assert infer_repeats(frac) == K
    est = oracle_probability(frac)
    assert est.min() > 0 and est.max() < 1
    # one value per k, increasing in k
    ks = np.rint(frac * K).astype(int)
    table = np.array([est[ks == k][0] for k in np.unique(ks)])
    assert np.all(np.diff(table) > 0)
    # closer to the truth than k/K, and the events with k = 0 get about their true mean
    assert np.mean((est - q) ** 2) < 0.8 * np.mean((frac - q) ** 2)
    assert est[ks == 0][0] == pytest.approx(q[ks == 0].mean(), rel=0.3)
    # the filter with the posterior mean gains more than with the raw fraction
    passed = rng.random(len(q)) < q
    sp_raw = expected_speedup(np.clip(1.5 * np.sqrt(frac), 0.01, 1), passed)["speedup"]
    sp_eb = expected_speedup(np.clip(1.5 * np.sqrt(est), 0.01, 1), passed)["speedup"]
    assert sp_eb > 1.2 * sp_raw


def test_sqrt_keep_map_beats_identity_for_calibrated_scores():
    q, rng = _bimodal_population(seed=5)
    passed = rng.random(len(q)) < q
    ident = expected_speedup(np.clip(q, 0.01, 1), passed)["speedup"]
    rows = scan_scale(q, passed, 0.01)
    best = max(r["speedup"] for r in rows)
    assert best > 1.2 * ident
    assert [r["scale"] for r in rows][int(np.argmax([r["speedup"] for r in rows]))] in (1.0, 1.5, 2.0)


def test_bootstrap_ratio_paired():
    q, rng = _bimodal_population(seed=7)
    passed = rng.random(len(q)) < q
    p_or = np.clip(1.5 * np.sqrt(q), 0.01, 1)
    same = bootstrap_ratio(p_or, p_or, passed, n_boot=50, seed=1)
    assert same["ratio"] == pytest.approx(1.0) and same["std"] < 1e-12  # paired: identical maps never differ
    noisy = np.clip(q * np.exp(rng.normal(0, 1.0, len(q))), 0, 1)
    res = bootstrap_ratio(np.clip(1.5 * np.sqrt(noisy), 0.01, 1), p_or, passed, n_boot=100, seed=1)
    assert res["ratio"] < 1.0 and res["std"] > 0
    assert res["q05"] <= res["ratio"] <= res["q95"]
    half = bootstrap_ratio(np.clip(1.5 * np.sqrt(noisy[: len(q) // 4]), 0.01, 1), p_or[: len(q) // 4], passed[: len(q) // 4],
                           n_boot=100, seed=1)
    assert half["std"] > 1.3 * res["std"]  # ~2x for a quarter of the events


def test_bootstrap_ratio_without_passing_events():
    res = bootstrap_ratio(np.full(20, 0.5), np.full(20, 0.5), np.zeros(20, bool), n_boot=10)
    assert np.isnan(res["ratio"]) and res["n_boot"] == 0
