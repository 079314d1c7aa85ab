"""pxd-cluster-gan: patches cut from digits, decoding, networks, training, cannot_generate, the
cluster evaluation, and its use as pxd-fast's cluster stage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from b2bkg.core.errors import B2bkgError, ConfigError, ModelError
from b2bkg.io.events import PxdDigits
from b2bkg.pxd.models import cluster_gan as cg

TINY = ["max_steps=2", "batch_size=16", "per_size=8", "max_train_events=3", "g_hidden=[16]", "d_channels=[4,4]",
        "d_hidden=8", "n_critic=1", "log_every=1", "checkpoint_every=1", "latent_dim=4", "size_embed=2"]
FAST_SET = ["calib_iters=1", "calib_events=2", "calib_occ_events=3", "latent_rank=2", "chunk_events=3"]


# ----------------------------------------------------------------------------- exact answers
def _two_clusters() -> PxdDigits:
    # cluster A: 3 pixels (u 10..11, v 20..21), charges 9, 30, 12; cluster B: one pixel (100, 500), 40 ADU
    return PxdDigits.from_events([dict(sensor=[3, 3, 3, 20], ucell=[10, 11, 11, 100], vcell=[20, 20, 21, 500],
                                       charge=[9, 30, 12, 40])])


def test_cut_patches_exact():
    s = cg.cut_patches(_two_clusters(), (8, 8), max_size=30)
    assert len(s) == 2 and s.fits.all()
    assert s.patch.shape == (2, 8, 8) and s.patch.dtype == np.uint8
    assert s.size.tolist() == [3, 1]
    assert sorted(s.patch[0][s.patch[0] > 0].tolist()) == [9, 12, 30]
    assert int(s.patch[1].sum()) == 40 and s.patch[1][4, 4] == 40  # centred on the cog
    f = cg.patch_features(s.patch)
    for k in cg.FEATURE_NAMES:
        assert f[k].tolist() == s.features[k].tolist(), k
    assert f["u_extent"].tolist() == [2, 1] and f["v_extent"].tolist() == [2, 1]
    assert f["total_charge"].tolist() == [51, 40] and f["seed_charge"].tolist() == [30, 40]
    # a patch too small for cluster A: it does not fit; max_size drops it
    assert cg.cut_patches(_two_clusters(), (4, 4)).fits.tolist() == [True, True]
    assert cg.cut_patches(_two_clusters(), (4, 4), max_size=2).size.tolist() == [1]


def test_decode_threshold_and_seed_component():
    x = torch.full((1, 5, 5), -1.0)
    enc = lambda q: float(cg.encode_patches(q))  # noqa: E731
    x[0, 2, 2] = enc(50)  # seed
    x[0, 2, 3] = enc(10)  # neighbour above threshold: kept
    x[0, 1, 1] = enc(5)  # below threshold: cleared
    x[0, 4, 4] = enc(20)  # above threshold, not connected to the seed: cleared
    p = cg.decode_patches(x, threshold_adu=7)
    assert p.dtype == np.uint8
    assert p[0, 2, 2] == 50 and p[0, 2, 3] == 10
    assert p.sum() == 60
    # an all-empty patch still yields one pixel at the threshold (every requested cluster exists)
    e = cg.decode_patches(torch.full((2, 4, 4), -1.0), threshold_adu=7)
    assert (e > 0).sum((1, 2)).tolist() == [1, 1] and e.max() == 7
    # "exact" decoding grows from the seed through the highest neighbours to the requested size
    x2 = x.clone().repeat(2, 1, 1)
    x2[:, 3, 3] = enc(15)  # neighbour of (2,2) and of (4,4)
    p = cg.decode_patches(x2, threshold_adu=7, size=np.array([3, 4]))
    assert (p > 0).sum((1, 2)).tolist() == [3, 4]
    # seed (2,2); then the highest neighbour (3,3) = 15; then (4,4) = 20 (now a neighbour) before (2,3) = 10
    assert p[0, 2, 2] == 50 and p[0, 3, 3] == 15 and p[0, 4, 4] == 20 and p[0, 2, 3] == 0
    assert p[1, 2, 3] == 10 and p[1, 1, 1] == 0


def test_balanced_indices_uniform_in_size():
    size = np.array([1] * 50 + [2] * 3 + [5] * 10)
    idx = cg.balanced_indices(size, per_size=7, max_size=30, rng=np.random.default_rng(0))
    assert np.bincount(size[idx]).tolist() == [0, 7, 7, 0, 0, 7]


def test_compare_cluster_features_exact_and_rejects_bad_input():
    a = {k: np.arange(100) for k in cg.FEATURE_NAMES}
    b = {k: np.arange(100) + 1000 for k in cg.FEATURE_NAMES}
    r = cg.compare_cluster_features(a, a, a)
    assert r["n"] == 100 and all(r[k]["ks"] == 0.0 and r[k]["floor"] == 0.0 for k in cg.FEATURE_NAMES)
    r = cg.compare_cluster_features(a, b)
    assert all(r[k]["ks"] == 1.0 and r[k]["floor"] is None for k in cg.FEATURE_NAMES)
    # KS against scipy at the same n
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(1)
    c = {k: rng.integers(0, 50, 400) for k in cg.FEATURE_NAMES}
    d = {k: rng.integers(5, 60, 400) for k in cg.FEATURE_NAMES}
    r = cg.compare_cluster_features(c, d)
    assert math.isclose(r["size"]["ks"], ks_2samp(c["size"], d["size"]).statistic, abs_tol=1e-12)
    bad = [{k: v for k, v in a.items() if k != "seed_charge"},  # missing feature
           {**a, "size": np.arange(99)},  # lengths differ
           {**a, "total_charge": -np.ones(100)},  # negative
           {k: np.zeros(0) for k in cg.FEATURE_NAMES},  # empty
           {**a, "v_extent": np.full(100, np.nan)},  # not finite
           np.zeros((100, 5))]  # not a dict
    for x in bad:
        with pytest.raises(ConfigError):
            cg.compare_cluster_features(a, x)


def test_config_checks():
    with pytest.raises(ConfigError, match="conditions"):
        cg.ClusterGanConfig(conditions=("layer", "source_type"))
    with pytest.raises(ConfigError, match="patch"):
        cg.ClusterGanConfig(patch_u=10)


# ----------------------------------------------------------------------------- networks
def test_network_shapes_gradients_and_determinism():
    cfg = cg.ClusterGanConfig(patch_u=8, patch_v=12, g_hidden=(16,), d_channels=(4, 4), d_hidden=8, latent_dim=4)
    fam = cg.ClusterGan()
    torch.manual_seed(0)
    m = fam.build(cfg)
    B = 5
    z = torch.randn(B, cfg.latent_dim)
    size = torch.tensor([1, 2, 3, 30, 7])
    cond = torch.as_tensor(cg.condition_features(np.array([0, 1, 17, 39, 5]), np.full(B, 100.0), np.full(B, 600.0),
                                                 cfg.conditions))
    assert cond.shape == (B, cfg.n_cond) and torch.isfinite(cond).all()
    x = m["generator"](z, size, cond)
    assert x.shape == (B, 8, 12) and x.abs().max() <= 1
    s = m["critic"](x, size, cond)
    assert s.shape == (B,)
    s.sum().backward()
    for name, p in list(m["generator"].named_parameters()) + list(m["critic"].named_parameters()):
        assert p.grad is not None, name
    zz = np.random.default_rng(0).standard_normal((B, cfg.latent_dim))
    a = cg.sample_clusters(m["generator"].eval(), cfg, size.numpy(), cond.numpy(), zz)
    b = cg.sample_clusters(m["generator"], cfg, size.numpy(), cond.numpy(), zz)
    assert a.shape == (B, 8, 12) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert ((a == 0) | (a >= cfg.threshold_adu)).all()
    assert (a > 0).sum((1, 2)).tolist() == size.tolist()  # "exact" decoding: the requested sizes
    f = cg.patch_features(a)
    assert (f["u_extent"] <= 8).all() and (f["v_extent"] <= 12).all()
    with pytest.raises(ConfigError, match="size"):
        cg.sample_clusters(m["generator"], cfg, np.array([31]), cond.numpy()[:1], zz[:1])
    # packing round trip (float16 storage): same patches as the unpacked generator
    arch, flat = cg.pack_generator(m["generator"], cfg)
    g2, cfg2 = cg.unpack_generator(arch, flat)
    assert cfg2.conditions == cfg.conditions and (cfg2.patch_u, cfg2.patch_v) == (8, 12)
    c = cg.sample_clusters(g2, cfg2, size.numpy(), cond.numpy(), zz)
    assert np.array_equal(c, cg.sample_clusters(g2, cfg2, size.numpy(), cond.numpy(), zz))
    with pytest.raises(ConfigError):
        cg.unpack_generator(arch, flat[:-1])


# ----------------------------------------------------------------------------- family end to end
@pytest.fixture(scope="module")
def sim_file(tmp_path_factory):
    from b2bkg.pxd.simulate import simulate_pxd

    path = tmp_path_factory.mktemp("cgan") / "train.h5"
    simulate_pxd(3, 21, path)
    return path


@pytest.fixture(scope="module")
def gan_run(sim_file):
    from b2bkg.training.trainer import train

    return train("pxd-cluster-gan", sim_file, sim_file.parent / "run", overrides=TINY, seed=4)


def test_training_steps_finite_and_deterministic(gan_run, sim_file, tmp_path):
    import csv

    from b2bkg.training.checkpoint import load_modules
    from b2bkg.training.trainer import train

    with open(gan_run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:
        assert all(math.isfinite(float(v)) for k, v in row.items() if v not in ("", None)), row
    again = train("pxd-cluster-gan", sim_file, tmp_path / "run2", overrides=TINY, seed=4)
    fam = cg.ClusterGan()
    from b2bkg.generate import load_run

    a, b = load_run(gan_run), load_run(again)
    for k, v in a.modules["generator"].state_dict().items():
        assert torch.equal(v, b.modules["generator"].state_dict()[k]), k
    fresh = fam.build(a.cfg)
    load_modules(a.weights_file, fresh)
    assert torch.equal(fresh["generator"].net[0].weight, a.modules["generator"].net[0].weight)


def test_generate_refuses_with_one_line(gan_run, tmp_path):
    from b2bkg.generate import generate

    with pytest.raises(ModelError) as e:
        generate(gan_run, 2, seed=1, out=tmp_path / "x.h5")
    msg = str(e.value)
    assert "cannot generate events" in msg and "\n" not in msg and "pxd-fast" in msg
    assert not (tmp_path / "x.h5").exists()


def test_evaluate_cluster_gan_reports_ks_and_floor(gan_run, sim_file):
    r = cg.evaluate_cluster_gan(gan_run, sim_file, sim_file, n_events=1, max_clusters=0)
    assert r["n"] > 100
    for k in cg.FEATURE_NAMES:
        assert 0.0 <= r[k]["ks"] <= 1.0 and r[k]["floor"] == 0.0  # truth2 = truth: floor exactly 0
    assert 0.0 < r["fit_fraction"] <= 1.0 and "1-1" in r["by_size"]
    # an untrained (2-step) generator is far from the truth somewhere
    assert max(r[k]["ks"] for k in cg.FEATURE_NAMES) > 0.1
    with pytest.raises(B2bkgError):
        cg.evaluate_cluster_gan(sim_file.parent, sim_file)


def test_pxd_fast_with_cluster_gan_stage(gan_run, sim_file, tmp_path):
    from b2bkg.generate import generate, load_run
    from b2bkg.io import read_pxd
    from b2bkg.pxd.models.fast import cluster_stage, sample_fast_event
    from b2bkg.training.trainer import train

    run = train("pxd-fast", sim_file, tmp_path / "fast", overrides=FAST_SET + [f"cluster_gan={gan_run}"], seed=3)
    loaded = load_run(run)
    t = loaded.modules["model"].tables()
    stage = cluster_stage(t)
    assert stage is not None and stage[1].patch_u == 16
    # the GAN pixels are used: with and without the stage the same event differs
    a = sample_fast_event(t, loaded.cfg, None, np.random.default_rng(5))
    b = sample_fast_event(t, loaded.cfg, None, np.random.default_rng(5))
    c = sample_fast_event(t, loaded.cfg, None, np.random.default_rng(5), cluster_gen=None)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert len(a["charge"]) != len(c["charge"]) or not np.array_equal(a["charge"], c["charge"])
    out = generate(run, 3, seed=2, out=tmp_path / "g.h5")
    d = read_pxd(out)
    d.validate()
    assert d.n_events == 3 and d.n_hits > 0 and d.charge.min() >= int(t["threshold_adu"][0])
    with pytest.raises(ConfigError, match="cluster_gan"):
        train("pxd-fast", sim_file, tmp_path / "bad", overrides=FAST_SET + [f"cluster_gan={tmp_path}"], seed=3)
