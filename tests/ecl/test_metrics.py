"""Waveform metrics, KS2 against scipy, validation subsets, event-level checks and evaluate_ecl."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from scipy.linalg import toeplitz

from b2bkg.core.errors import ConfigError
from b2bkg.ecl.evaluate import evaluate_ecl
from b2bkg.ecl.metrics import (
    event_level_checks,
    ks2,
    ks2_per_crystal,
    make_validation_subset,
    mean_ks2,
    pedestal_check,
    pooled_autocovariance,
    waveform_metrics,
)


def test_metrics_exact_values():
    s = np.zeros((1, 2, 31))
    s[0, 0, 10] = 31.0  # a single spike
    s[0, 1] = 5.0 + 2.0 * np.arange(31)  # a straight line
    cov = np.zeros((1, 31))
    cov[0, 0] = 4.0  # white noise, variance 4
    m = waveform_metrics(s, cov)
    assert np.isclose(m["avg_amp_diff"][0, 0], (30 * 1.0 + 30.0) / 31)
    assert m["max_amp_diff"][0, 0] == 31.0 and m["max_amp_diff"][0, 1] == 60.0
    assert np.allclose(m["power"][0, 0], 31.0**2 / 31)  # flat spectrum of a spike
    assert m["power"].shape == (1, 2, 15)
    assert np.isclose(m["chi2"][0, 1], 0.0, atol=1e-9)  # a line has no residual
    k = np.arange(31) - 15.0
    d = s[0, 0] - s[0, 0].mean() - (s[0, 0] @ k) / (k @ k) * k
    assert np.isclose(m["chi2"][0, 0], d @ d / 4.0, rtol=1e-5)


def test_pooled_autocovariance_white_and_ar1():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (1, 4000, 31))
    r = pooled_autocovariance(x)
    # per-waveform mean removed: E r[0] = 9 * 30/31, E r[1] = 30 * (-9/31) / 31 (estimator bias)
    assert abs(r[0, 0] - 9 * 30 / 31) < 0.3 and abs(r[0, 1] + 9 * 30 / 31**2) < 0.1
    true = 0.6 ** np.arange(31)
    y = (np.linalg.cholesky(toeplitz(true)) @ rng.standard_normal((31, 3000))).T[None]
    r2 = pooled_autocovariance(y[:, :1500], y[:, 1500:])
    assert 0.45 < r2[0, 1] / r2[0, 0] < 0.62  # 0.6 less the bias of the per-waveform mean


def test_ks2_matches_scipy_with_ties_and_nan():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 8, (4, 60)).astype(float)
    y = rng.integers(0, 9, (4, 45)).astype(float)
    ref = [stats.ks_2samp(a, b).statistic for a, b in zip(x, y)]
    assert np.allclose(ks2(x, y), ref)
    x[1, :7] = np.nan
    assert np.isclose(ks2(x, y)[1], stats.ks_2samp(x[1, 7:], y[1]).statistic)
    assert ks2(np.zeros(5), np.full(5, 2.0)) == 1.0
    assert ks2(np.arange(5.0), np.arange(5.0)) == 0.0


def test_ks2_per_crystal_separates_distributions():
    rng = np.random.default_rng(3)
    a = rng.normal(3000, 10, (3, 400, 31))
    b = rng.normal(3000, 10, (3, 400, 31))
    c = rng.normal(3000, 20, (3, 400, 31))  # twice the noise
    same, diff = ks2_per_crystal(a, b), ks2_per_crystal(a, c)
    assert same["mean"].max() < 0.15 and diff["mean"].min() > 0.5
    assert set(same) == {"avg_amp_diff", "max_amp_diff", "power", "chi2", "mean"}
    assert mean_ks2(a, a) == 0.0
    with pytest.raises(ConfigError, match="crystals"):
        ks2_per_crystal(a, b[:2])


def test_validation_subset():
    rng = np.random.default_rng(4)
    w = rng.integers(2900, 3100, (6, 8736, 31)).astype(np.int32)
    mask = np.zeros((6, 8736), bool)
    mask[:, :] = True
    s1 = make_validation_subset(w, n_crystals=16, n_waveforms=4, seed=1)
    s2 = make_validation_subset(w, n_crystals=16, n_waveforms=4, seed=1)
    assert np.array_equal(s1.crystals, s2.crystals) and s1.waveforms.shape == (16, 4, 31)
    assert np.array_equal(s1.waveforms[3, 0], w[s1.events[0], s1.crystals[3]])
    assert len(np.unique(s1.theta_id)) > 8  # spread over the detector
    sm = make_validation_subset(w, n_crystals=16, n_waveforms=4, seed=1, mask=mask)
    assert np.isnan(sm.waveforms).all()


def test_event_level_checks_see_event_correlation():
    rng = np.random.default_rng(5)
    n = 12
    scale = rng.uniform(0.5, 2.0, n)[:, None, None]  # every crystal of an event moves together
    corr = 3000 + scale * rng.normal(0, 10, (n, 8736, 31))
    indep = 3000 + rng.permuted(np.broadcast_to(scale, (n, 8736, 1)), axis=0) * rng.normal(0, 10, (n, 8736, 31))
    r = event_level_checks(corr, indep)
    assert r["truth"]["pair_corr"] > 0.5 and abs(r["generated"]["pair_corr"]) < 0.1
    assert r["truth"]["coherence"] > 10 * r["generated"]["coherence"]
    p = pedestal_check(corr, corr + 5)
    assert abs(p["mean_abs_diff_per_crystal_adu"] - 5) < 1e-6


def test_evaluate_ecl_writes_metrics_and_plots(tmp_path):
    from b2bkg.ecl.simulate import iter_ecl_chunks

    truth = np.concatenate([w.waveforms for w, _ in iter_ecl_chunks(6, seed=1, chunk_size=6)])
    rng = np.random.default_rng(0)
    gauss = (3000 + rng.normal(0, 10, (3, 8736, 31))).astype(np.int32)  # a poor "generator"
    res = evaluate_ecl(truth, gauss, tmp_path / "eval", seed=0)
    assert res["n_waveforms_per_crystal"] == 3 and res["floor_from"] == "split"
    assert res["ks2"]["mean"] > res["ks2_floor"]["mean"]
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk["ks2"]["mean"] == res["ks2"]["mean"]
    for p in res["plots"]:
        assert (tmp_path / "eval" / p).stat().st_size > 1000
    npz = np.load(tmp_path / "eval" / "ks2_per_crystal.npz")
    assert npz["model_mean"].shape == (8736,)
    with pytest.raises(ConfigError, match="mask"):
        evaluate_ecl(truth, gauss, tmp_path / "e2", mask=np.zeros((2, 2), bool))
