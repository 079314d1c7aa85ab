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
