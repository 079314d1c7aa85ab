"""PXD metrics: exact answers, agreement with numpy/scipy, zero for identical samples, and a
distorted sample standing clearly above the truth-vs-truth floor."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg, stats

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import PxdDigits
from b2bkg.pxd.clusters import find_clusters
from b2bkg.pxd.metrics import (
    DISTANCES, PIXELS_PER_SENSOR, PxdSummary, charge_spectrum, compare, compare_with_floor, frechet_distance,
    hist_quantile, image_occupancy, ks_from_hist, occupancy_correlation, occupancy_per_ladder, occupancy_per_layer,
    occupancy_per_sensor, sensor_counts, summarize_pxd, wasserstein_from_hist,
)


def toy_pxd(seed: int, n_events: int = 24, hits_per_sensor: float = 300.0, sensor_scale=None,
            charge_scale: float = 1.0, level_sd: float = 0.08) -> PxdDigits:
    """Clustered toy digits: a common per-event level (correlates the sensors), clusters of 1-3
    pixels, gamma charges. ``sensor_scale`` (40,) multiplies the rate of each sensor."""
    rng = np.random.default_rng(seed)
    rate = np.full(40, hits_per_sensor / 1.8) * (1.0 if sensor_scale is None else np.asarray(sensor_scale))
    rate = rate * np.where(np.arange(40) < 16, 1.5, 0.7)
    level = np.clip(1 + level_sd * rng.standard_normal(n_events), 0.5, None)
    ncl = rng.poisson(level[:, None] * rate[None, :])  # (n_events, 40) clusters
    ev = np.repeat(np.repeat(np.arange(n_events), 40), ncl.ravel())
    sen = np.repeat(np.tile(np.arange(40), n_events), ncl.ravel())
    n = len(ev)
    u0, v0 = rng.integers(0, 250, n), rng.integers(0, 768, n)
    size = rng.choice([1, 2, 3], n, p=[0.45, 0.35, 0.2])
    ci = np.repeat(np.arange(n), size)
    k = np.arange(len(ci)) - np.repeat(np.cumsum(size) - size, size)  # pixel number inside the cluster
    u = np.clip(u0[ci] + (k == 2), 0, 249)
    v = np.clip(v0[ci] + (k >= 1), 0, 767)
    key = np.unique(((ev[ci] * 40 + sen[ci]) * 250 + u) * 768 + v)
    v, key = key % 768, key // 768
    u, key = key % 250, key // 250
    s, e = key % 40, key // 40
    q = np.clip(np.rint((7 + rng.gamma(1.6, 9.0, len(e))) * charge_scale), 1, 255)
    offsets = np.r_[0, np.cumsum(np.bincount(e, minlength=n_events))]
    return PxdDigits(offsets, s, u, v, q)


def test_occupancies_exact():
    d = PxdDigits([0, 3, 4], sensor=[0, 0, 17, 39], ucell=[0, 1, 5, 249], vcell=[0, 0, 5, 767], charge=[9, 9, 9, 9])
    occ = occupancy_per_sensor(d) * PIXELS_PER_SENSOR
    assert occ.shape == (2, 40)
    assert occ[0, 0] == 2 and occ[0, 17] == 1 and occ[1, 39] == 1 and occ.sum() == 4
    lay = occupancy_per_layer(d)
    np.testing.assert_allclose(lay[0], [2 / (16 * PIXELS_PER_SENSOR), 1 / (24 * PIXELS_PER_SENSOR)])
    lad = occupancy_per_ladder(d)
    assert lad.shape == (2, 20)
    np.testing.assert_allclose(lad[0, 0] * 2 * PIXELS_PER_SENSOR, 2)   # ladder 1.1
    np.testing.assert_allclose(lad[0, 8] * 2 * PIXELS_PER_SENSOR, 1)   # ladder 2.1 holds sensor 17
    np.testing.assert_allclose(lad[1, 19] * 2 * PIXELS_PER_SENSOR, 1)  # ladder 2.12 holds sensor 39
    assert image_occupancy(d).shape == (80,)
    h = charge_spectrum(d)
    assert h.shape == (256,) and h[9] == 4 and h.sum() == 4


def test_correlation_matches_numpy(rng):
    x = rng.normal(size=(50, 40)) + rng.normal(size=(50, 1))
    np.testing.assert_allclose(occupancy_correlation(x), np.corrcoef(x, rowvar=False), atol=1e-12)
    # integer weights == repeated rows
    w = rng.integers(0, 3, 50)
    np.testing.assert_allclose(occupancy_correlation(x, w), np.corrcoef(np.repeat(x, w, 0), rowvar=False), atol=1e-12)
    # a constant sensor gives 0 correlation, not NaN
    x[:, 5] = 2.0
    c = occupancy_correlation(x)
    assert np.isfinite(c).all() and c[5, 5] == 1 and np.all(c[5, np.arange(40) != 5] == 0)


@pytest.mark.parametrize("n1,n2", [(500, 300), (37, 2000)])
def test_w1_ks_match_scipy(rng, n1, n2):
    a = rng.integers(1, 256, n1)
    b = np.minimum(rng.geometric(0.05, n2), 255)
    ha, hb = np.bincount(a), np.bincount(b)
    np.testing.assert_allclose(wasserstein_from_hist(ha, hb), stats.wasserstein_distance(a, b), rtol=1e-12)
    np.testing.assert_allclose(ks_from_hist(ha, hb), stats.ks_2samp(a, b).statistic, rtol=1e-12)
    # batched rows
    w = wasserstein_from_hist(np.stack([ha, ha]), np.stack([_pad(hb, len(ha)), _pad(ha, len(ha))]))
    np.testing.assert_allclose(w, [stats.wasserstein_distance(a, b), 0.0])


def _pad(h, k):
    return np.pad(h, (0, max(0, k - len(h))))[:max(k, len(h))]


def test_hist_quantile(rng):
    x = rng.integers(0, 300, 1001)
    for q in (0.1, 0.5, 0.9, 0.99):
        assert hist_quantile(np.bincount(x), q) == np.quantile(x, q, method="inverted_cdf")


def test_frechet_matches_sqrtm(rng):
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(150, 6)) * 1.3 + 0.2
    m1, c1, m2, c2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    ref = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    np.testing.assert_allclose(frechet_distance(m1, c1, m2, c2), ref, rtol=1e-8)
    assert frechet_distance(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-10)


def test_summary_matches_direct_computation():
    d = toy_pxd(1, n_events=6)
    s = PxdSummary.from_digits(d)
    c = find_clusters(d)
    np.testing.assert_array_equal(s.counts, sensor_counts(d))
    np.testing.assert_allclose(s.counts / PIXELS_PER_SENSOR, occupancy_per_sensor(d))
    np.testing.assert_array_equal(np.asarray(s.charge_hist.sum(0)).ravel(), charge_spectrum(d)[: s.charge_hist.shape[1]])
    np.testing.assert_array_equal(np.asarray(s.cluster_hists["size"].sum(0)).ravel(), np.bincount(c.size))
    assert s.n_clusters.sum() == c.n_clusters
    # chunked summaries (streaming) equal the one-shot summary
    s2 = PxdSummary.from_digits(d, chunk_events=4)
    assert PxdSummary.from_digits(d, chunk_events=4).n_events == 6
    for f in s.cluster_hists:
        np.testing.assert_array_equal(s2.cluster_hists[f].toarray(), s.cluster_hists[f].toarray())
    np.testing.assert_array_equal(s2.image_hist.toarray(), s.image_hist.toarray())
    st = summarize_pxd(d)
    q = d.charge.astype(int)
    assert st["n_events"] == 6
    assert st["charge_median_adu"] == np.quantile(q, 0.5, method="inverted_cdf")
    assert st["charge_mean_adu"] == pytest.approx(q.mean())
    assert st["cluster_size_mean"] == pytest.approx(c.size.mean())
    assert st["cluster_size1_frac"] == pytest.approx((c.size == 1).mean())
    assert st["occupancy_layer1_pct"] == pytest.approx(np.sum(d.sensor < 16) / (6 * 16 * PIXELS_PER_SENSOR) * 100)
    assert len(st["occupancy_ladders_layer2_pct"]) == 12


def test_identical_samples_give_zero():
    s = PxdSummary.from_digits(toy_pxd(2, n_events=10))
    r = compare(s, s, n_boot=5, seed=3)
    assert set(r) == set(DISTANCES)
    for k, v in r.items():
        assert v["value"] == pytest.approx(0.0, abs=1e-9), k
        assert np.isfinite(v["err"]), k


def test_bootstrap_is_seeded_and_validated():
    a, b = PxdSummary.from_digits(toy_pxd(3, 8)), PxdSummary.from_digits(toy_pxd(4, 8))
    assert compare(a, b, n_boot=4, seed=1) == compare(a, b, n_boot=4, seed=1)
    assert compare(a, b, n_boot=4, seed=1) != compare(a, b, n_boot=4, seed=2)
    with pytest.raises(ConfigError, match="n_boot"):
        compare(a, b, n_boot=-1)


def _above(d, nsig=4.0):
    return d["value"] - d["floor"] > nsig * np.hypot(d["err"], d["floor_err"])


def test_distortions_stand_above_the_floor():
    t, t2 = PxdSummary.from_digits(toy_pxd(10)), PxdSummary.from_digits(toy_pxd(11))
    same = compare_with_floor(t, PxdSummary.from_digits(toy_pxd(12)), t2, n_boot=20)
    hot = compare_with_floor(t, PxdSummary.from_digits(toy_pxd(12, charge_scale=1.2)), t2, n_boot=20)
    for k in ("w1_charge", "ks_charge", "w1_cluster_total_charge", "w1_cluster_seed_charge", "fpd"):
        assert _above(hot[k]), (k, hot[k])
        assert not _above(same[k]), (k, same[k])
    # the undistorted sample sits at the floor within errors for every distance
    for k, v in same.items():
        assert abs(v["value"] - v["floor"]) < 5 * np.hypot(v["err"], v["floor_err"]) + 1e-12, (k, v)


def _ladder_case(factor: float, **kw):
    t, t2 = PxdSummary.from_digits(toy_pxd(20, **kw)), PxdSummary.from_digits(toy_pxd(21, **kw))
    scale = np.ones(40)
    scale[[2, 3]] = factor  # ladder 1.2
    same = compare_with_floor(t, PxdSummary.from_digits(toy_pxd(22, **kw)), t2, n_boot=20)
    lad = compare_with_floor(t, PxdSummary.from_digits(toy_pxd(22, sensor_scale=scale, **kw)), t2, n_boot=20)
    return same, lad


def test_one_ladder_distortion_stands_above_the_floor():
    # small toy: ~1.4 % statistical error per sensor, so a +20 % ladder is the clear case here;
    # the +10 % ladder of the issue is the slow test below
    same, lad = _ladder_case(1.2, n_events=40, hits_per_sensor=250.0, level_sd=0.03)
    for k in ("occupancy_chi2_ndf", "occupancy_rel_err_max_abs"):
        assert _above(lad[k]), (k, lad[k])
        assert not _above(same[k]), (k, same[k])
    assert not _above(lad["w1_charge"])
    shift = lad["occupancy_bias_layer1"]["value"] - same["occupancy_bias_layer1"]["value"]
    assert shift == pytest.approx(0.4 / 16, abs=0.008)
    assert same["occupancy_chi2_ndf"]["value"] == pytest.approx(1.0, abs=0.5)


@pytest.mark.slow
def test_one_ladder_plus_10_percent_stands_above_the_floor():
    same, lad = _ladder_case(1.1, n_events=100, hits_per_sensor=600.0, level_sd=0.03)
    # (the mean abs error over 40 sensors dilutes one ladder 20-fold: it needs larger samples)
    for k in ("occupancy_chi2_ndf", "occupancy_rel_err_max_abs"):
        assert _above(lad[k]), (k, lad[k])
        assert not _above(same[k]), (k, same[k])
    assert _above(lad["fpd"], 3.0) and not _above(same["fpd"], 3.0)
