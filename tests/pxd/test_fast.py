"""pxd-fast: sparse sampling helpers, learned densities, the cluster model, and the family end to end."""

from __future__ import annotations

import numpy as np
import pytest

from b2bkg.io import Conditions, read_pxd
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits
from b2bkg.pxd.sample import BlockedAlias, assemble_digits, cluster_signatures, replay_fraction

FAST_SET = ["calib_iters=1", "calib_events=3", "calib_occ_events=6", "latent_rank=2", "chunk_events=4"]


# ----------------------------------------------------------------------------- helpers with exact answers
def test_assemble_adds_charges_thresholds_and_drops_off_sensor():
    s = np.array([0, 0, 0, 1, 1, 2])
    u = np.array([5, 5, 6, 0, 250, 3])
    v = np.array([7, 7, 7, 0, 0, 767])
    q = np.array([4, 5, 6, 200, 50, 120])
    d = assemble_digits(s, u, v, q, threshold_adu=7)
    # (0,5,7): 4+5=9 fires; (0,6,7): 6 < 7 suppressed; (1,250,0) off sensor
    assert d["sensor"].tolist() == [0, 1, 2]
    assert d["ucell"].tolist() == [5, 0, 3]
    assert d["vcell"].tolist() == [7, 0, 767]
    assert d["charge"].tolist() == [9, 200, 120]
    clip = assemble_digits(np.array([3, 3]), np.array([1, 1]), np.array([1, 1]), np.array([200, 100]), 7)
    assert clip["charge"].tolist() == [255]


def test_blocked_alias_frequencies():
    w = [np.array([1.0, 0.0, 3.0, 6.0]), np.array([5.0]), np.array([2.0, 2.0])]
    a = BlockedAlias.from_weights(w)
    rng = np.random.default_rng(0)
    n = 200_000
    j = a.draw(np.zeros(n, np.int64), rng.random((2, n)))
    freq = np.bincount(j, minlength=7)[:4] / n
    assert np.allclose(freq, [0.1, 0.0, 0.3, 0.6], atol=0.005)
    assert set(a.draw(np.ones(10, np.int64), rng.random((2, 10))).tolist()) == {4}
    assert set(a.draw(np.full(1000, 2), rng.random((2, 1000))).tolist()) == {5, 6}


def test_cluster_signatures_translation_invariant_and_charge_sensitive():
    base = dict(sensor=[0, 0, 0], ucell=[10, 11, 11], vcell=[20, 20, 21], charge=[9, 30, 12])
    moved = dict(sensor=[5, 5, 5], ucell=[100, 101, 101], vcell=[300, 300, 301], charge=[9, 30, 12])
    other_q = dict(base, charge=[9, 31, 12])
    d = PxdDigits.from_events([base, moved, other_q])
    sig = cluster_signatures(d, min_size=3)
    assert len(sig) == 3 and sig[0] == sig[1] and sig[0] != sig[2]
    train = PxdDigits.from_events([base])
    r = replay_fraction(train, d)
    assert r["n_clusters"] == 3 and r["n_matched"] == 2
    assert np.isclose(r["fraction"], 2 / 3)
    assert replay_fraction(train, PxdDigits.from_events([dict(sensor=[0], ucell=[1], vcell=[1], charge=[9])]))["n_clusters"] == 0


def test_build_patterns_exact_size_extent_connected():
    from b2bkg.pxd.clusters import find_clusters
    from b2bkg.pxd.models.cluster_model import build_patterns

    size = np.array([1, 2, 3, 4, 5, 9, 7, 12, 40])
    w = np.array([1, 2, 2, 2, 3, 3, 1, 3, 5])
    h = np.array([1, 1, 2, 2, 2, 3, 7, 6, 20])
    flip = np.array([0, 1, 0, 1, 1, 0, 0, 1, 0], bool)
    ci, du, dv = build_patterns(size, w, h, flip, np.random.default_rng(1), 0.35)
    assert np.bincount(ci, minlength=len(size)).tolist() == size.tolist()
    keys = ci * 10_000 + du * 100 + dv
    assert len(np.unique(keys)) == len(keys)  # no pixel twice
    # place each cluster alone on its own sensor: one cluster each, of the asked size and extents
    d = PxdDigits.from_events([dict(sensor=ci, ucell=du + 10, vcell=dv + 10, charge=np.full(len(ci), 20))])
    cl = find_clusters(d)
    assert cl.n_clusters == len(size)
    assert sorted(zip(cl.size, cl.u_extent, cl.v_extent)) == sorted(zip(size, w, h))


def test_poisson_glm_and_latent_covariance_recover_truth():
    from b2bkg.pxd.models import fast_density as fd

    rng = np.random.default_rng(4)
    n = 4000
    x = np.c_[np.ones(n), rng.standard_normal(n)]
    coef = np.array([[np.log(50.0), 0.5], [np.log(200.0), -0.3], [np.log(80.0), 0.0]])
    z = rng.standard_normal(n)
    lat = np.c_[0.2 * z, 0.2 * z, 0.05 * rng.standard_normal(n)]
    y = rng.poisson(np.exp(x @ coef.T + lat - 0.5 * np.array([0.04, 0.04, 0.0025])))
    fit = fd.fit_poisson_glm(x, y, ridge=0.0)
    assert np.allclose(fit[:, 1], coef[:, 1], atol=0.03)
    load, diag = fd.fit_latent_covariance(y, np.exp(x @ fit.T), rank=1)
    cov = load @ load.T + np.diag(diag)
    assert abs(cov[0, 1] - 0.04) < 0.01 and abs(cov[0, 2]) < 0.01


# ----------------------------------------------------------------------------- the family end to end
@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    from b2bkg.core.conditions import ConditionsConfig
    from b2bkg.pxd.simulate import simulate_pxd

    tmp = tmp_path_factory.mktemp("fast")
    train = simulate_pxd(6, 11, tmp / "train.h5", conditions=ConditionsConfig(lumi_spread=0.5, current_spread=0.05))
    return tmp, train


@pytest.fixture(scope="module")
def fast_run(sim_files):
    from b2bkg.training.trainer import train

    tmp, data = sim_files
    return train("pxd-fast", data, tmp / "run", config="small", overrides=FAST_SET, seed=3)


def test_fast_trains_and_generates_full_resolution_digits(fast_run, sim_files, tmp_path):
    from b2bkg.generate import generate

    out = generate(fast_run, 3, seed=5, out=tmp_path / "g.h5")
    d = read_pxd(out)
    d.validate()
    assert d.n_events == 3 and d.n_hits > 1000
    assert d.sensor.max() < N_SENSORS and d.ucell.max() < N_UCELLS and d.vcell.max() < N_VCELLS
    assert d.charge.min() >= 7
    for i in range(d.n_events):  # unique pixels per event
        e = d.event(i)
        key = (e["sensor"].astype(np.int64) * N_VCELLS + e["vcell"]) * N_UCELLS + e["ucell"]
        assert len(np.unique(key)) == len(key)
    # occupancy of the right order (same as the training file within 30 %: tiny sample)
    t = read_pxd(sim_files[1])
    assert 0.7 < (d.n_hits / d.n_events) / (t.n_hits / t.n_events) < 1.3
    # model files are small
    assert (fast_run / "weights.safetensors").stat().st_size < 2_000_000


def test_fast_same_seed_same_output_and_batch_independent(fast_run, tmp_path):
    from b2bkg.generate import generate

    a = read_pxd(generate(fast_run, 4, seed=9, out=tmp_path / "a.h5", batch_size=4))
    b = read_pxd(generate(fast_run, 4, seed=9, out=tmp_path / "b.h5", batch_size=1))
    c = read_pxd(generate(fast_run, 4, seed=10, out=tmp_path / "c.h5"))
    for k in ("offsets", "sensor", "ucell", "vcell", "charge"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert not np.array_equal(a.offsets, c.offsets)


def test_fast_conditions_move_occupancy(fast_run):
    from b2bkg.core.conditions import CONDITION_NAMES
    from b2bkg.generate import load_run

    run = load_run(fast_run)
    ev = np.arange(4)

    def hits(lumi):
        vals = np.tile(np.array([lumi, 1, 1, 1, 1, 0], np.float32), (len(ev), 1))
        d = run.family.sample(run.modules, run.cfg, ev, 1, "cpu", conditions=Conditions(vals, CONDITION_NAMES))["pxd"]
        return d.n_hits

    lo, mid, hi = hits(0.5), hits(1.0), hits(2.0)
    assert lo < mid < hi
    # without conditions the learned density is used
    d = run.family.sample(run.modules, run.cfg, ev, 1, "cpu", conditions=None)["pxd"]
    assert d.n_events == 4 and d.n_hits > 0


def test_fast_no_replay_statistic(fast_run, sim_files, tmp_path):
    from b2bkg.generate import generate

    train = read_pxd(sim_files[1])
    gen = read_pxd(generate(fast_run, 2, seed=4, out=tmp_path / "g.h5"))
    self_r = replay_fraction(train.slice(0, 2), train.slice(0, 2))
    assert self_r["fraction"] == 1.0
    r = replay_fraction(train, gen)
    assert r["n_clusters"] > 100 and 0.0 <= r["fraction"] < 0.5


def test_fast_bad_data_one_line_error(tmp_path):
    from b2bkg.core.errors import B2bkgError
    from b2bkg.io import FileWriter
    from b2bkg.training.trainer import train

    p = tmp_path / "one.h5"
    with FileWriter(p, seed=1) as w:
        w.append(pxd=PxdDigits.from_events([dict(sensor=[0], ucell=[1], vcell=[1], charge=[9])]))
    with pytest.raises(B2bkgError, match="at least 2"):
        train("pxd-fast", p, tmp_path / "run", overrides=FAST_SET)


def test_condition_features_squares_and_cross_terms():
    from b2bkg.pxd.models import fast_density as fd

    rng = np.random.default_rng(0)
    cond = np.exp(rng.normal(0, 0.3, (50, 6)))
    cond[:, 5] = rng.random(50) < 0.5
    dens = fd.fit_conditions_density(cond)
    args = (cond, dens["feat_mean"], dens["feat_std"], dens["feat_used"])
    lin, sq, full = fd.condition_features(*args), fd.condition_features(*args, True), fd.condition_features(*args, "full")
    assert lin.shape == (50, 7) and sq.shape == (50, 12) and full.shape == (50, 22)
    np.testing.assert_array_equal(full[:, :12], sq)
    np.testing.assert_allclose(full[:, 12], sq[:, 1] * sq[:, 2])  # first pairwise product: log-lumi x log-HER current
    with pytest.raises(ValueError, match="quadratic"):
        fd.condition_features(*args, "cubic")


# ----------------------------------------------------------------------------- conditioned count mean
def test_poly_features_layout():
    from b2bkg.pxd.models import fast_density as fd

    c = np.array([[2.0, 3.0, 5.0, 7.0, 11.0, 1.0]])
    p = fd.poly_features(c)
    assert p.shape == (1, 21)
    assert p[0, :6].tolist() == [1.0, 2.0, 3.0, 5.0, 7.0, 11.0]
    # products c_i c_j, i <= j, row-major: (0,0)=4, (0,1)=6, ..., (4,4)=121; injection is not used
    assert p[0, 6:9].tolist() == [4.0, 6.0, 10.0] and p[0, -1] == 121.0
    assert np.array_equal(fd.poly_features(c[0]), p)


def _two_source_counts(rng, cond, n_dims=12):
    """Counts of ``n_dims`` dimensions fed by two sources with different condition laws (one linear in
    c0, one quadratic in c1) and different per-dimension loadings; returns (counts, true mean)."""
    load = np.stack([np.linspace(50, 5, n_dims), np.linspace(3, 60, n_dims)])  # (2, D)
    src = np.stack([cond[:, 0], cond[:, 1] ** 2], 1)  # (N, 2)
    mean = src @ load
    return rng.poisson(mean), mean


def test_reduced_rank_recovers_a_sum_of_sources_off_the_training_correlation():
    from b2bkg.pxd.models import fast_density as fd

    rng = np.random.default_rng(7)
    n = 1500
    z = rng.standard_normal(n)
    cond = np.ones((n, 6))
    cond[:, 0] = np.exp(0.3 * z + 0.1 * rng.standard_normal(n))  # c0, c1 strongly correlated in training
    cond[:, 1] = np.exp(0.15 * z + 0.05 * rng.standard_normal(n))
    cond[:, 5] = 0.0
    y, _ = _two_source_counts(rng, cond)
    held = np.array([[0.8, 1.15, 1, 1, 1, 0]])  # low c0 with high c1: against the training correlation
    truth = _two_source_counts(rng, held)[1][0]
    err = {}
    for rank in (1, 2, 21):
        b = fd.fit_reduced_rank(fd.poly_features(cond), y, rank)
        assert b.shape == (21, 12)
        err[rank] = np.abs((fd.poly_features(held) @ b)[0] / truth - 1).max()
    assert err[2] < 0.03
    assert err[1] > 0.1  # rank 1 cannot hold two sources with different loadings
    assert err[21] > 1.5 * err[2]  # one free regression per dimension is noisier off the training points


def test_count_log_mean_log_linear_and_polynomial():
    from b2bkg.pxd.models import fast_density as fd

    rng = np.random.default_rng(1)
    coef = rng.normal(0, 0.1, (4, 3))
    x = np.c_[np.ones(5), rng.normal(0, 1, (5, 2))]
    cond = np.exp(rng.normal(0, 0.2, (5, 6)))
    np.testing.assert_allclose(fd.count_log_mean(coef, x, np.zeros((0, 4)), np.zeros(0), cond), x @ coef.T)
    pb = np.abs(rng.normal(1, 0.1, (21, 4)))
    eta = fd.count_log_mean(coef, x, pb, np.full(4, 1e-3), cond)
    np.testing.assert_allclose(eta, x @ coef.T + np.log(fd.poly_features(cond) @ pb))
    np.testing.assert_allclose(fd.count_log_mean(coef, x[0], pb, np.full(4, 1e-3), cond[0]), eta[0])
    # the floor keeps a negative polynomial finite
    assert np.isfinite(fd.count_log_mean(coef, x, -pb, np.full(4, 1e-3), cond)).all()


def test_fast_holds_reduced_rank_count_model_and_loads_older_runs(fast_run):
    from b2bkg.generate import load_run
    from b2bkg.pxd.models.fast import FastPxdModel, sample_fast_event

    run = load_run(fast_run)
    t = run.modules["model"].tables()
    D = N_SENSORS * run.cfg.n_classes
    assert t["poly_b"].shape == (21, D) and t["poly_floor"].shape == (D,)
    assert np.linalg.matrix_rank(t["poly_b"], tol=1e-9 * np.abs(t["poly_b"]).max()) <= run.cfg.count_rank
    assert t["occ_num"].shape == (21, N_SENSORS) and t["occ_den"].shape == (21, N_SENSORS)
    # a run folder from before the polynomial mean (no poly_* tables) loads as the log-linear model
    from b2bkg.training.checkpoint import _load_into

    sd = {f"model.{k}": v for k, v in run.modules["model"].state_dict().items() if not k.startswith(("poly_", "occ_"))}
    m = FastPxdModel()
    _load_into({"model": m}, sd, "old run")
    old = m.tables()
    assert old["poly_b"].size == 0 and old["poly_floor"].size == 0 and old["occ_num"].size == 0
    cond = np.array([1.0, 1, 1, 1, 1, 0])
    d = sample_fast_event(old, run.cfg, cond, np.random.default_rng(0))
    assert len(d["charge"]) > 0


def test_occupancy_log_factor_ratio_of_polynomials():
    from b2bkg.pxd.models import fast_density as fd

    num = np.zeros((21, 3))
    den = np.zeros((21, 3))
    num[0], den[0] = [2.0, 1.0, 1.0], [1.0, 1.0, 1.0]  # constants: factor 2, 1, 1
    num[1, 1] = 1.0  # sensor 1: (1 + lumi) / 1
    den[0, 2] = -1.0  # sensor 2: negative denominator -> no correction
    c = np.array([[1.5, 1, 1, 1, 1, 0], [0.5, 1, 1, 1, 1, 1]])
    f = fd.occupancy_log_factor(num, den, c)
    np.testing.assert_allclose(f, np.log([[2.0, 2.5, 1.0], [2.0, 1.5, 1.0]]))
    np.testing.assert_allclose(fd.occupancy_log_factor(num, den, c[0]), f[0])
    assert fd.occupancy_log_factor(num * 100, den, c, clip=1.0).max() == 1.0


def test_fit_offset_flag_recovers_a_two_valued_factor():
    from b2bkg.pxd.models import fast_density as fd

    rng = np.random.default_rng(3)
    n = 20_000
    flag = (rng.random(n) < 0.2).astype(np.float64)
    x = (flag - flag.mean()) / flag.std()
    mu = np.exp(rng.normal(3.0, 0.3, (n, 2)))  # fixed means, vary per event
    y = rng.poisson(mu * np.array([0.9, 1.2]) * np.where(flag[:, None] > 0, [1.5, 1.0], 1.0))
    a, b = fd.fit_offset_flag(y, mu, x)
    fac = np.exp(a + b * x[:, None])  # fitted per-event factor
    np.testing.assert_allclose(fac[flag == 0][0], [0.9, 1.2], rtol=0.01)
    np.testing.assert_allclose(fac[flag == 1][0], [0.9 * 1.5, 1.2], rtol=0.02)
    a0, b0 = fd.fit_offset_flag(y, mu, None)
    assert np.all(b0 == 0) and np.allclose(np.exp(a0), y.sum(0) / mu.sum(0))
