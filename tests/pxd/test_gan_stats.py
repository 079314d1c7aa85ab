"""Event-statistics matching of the PXD image GANs (b2bkg.pxd.models.gan_stats), event norm, coarse WGAN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from b2bkg.core.errors import ConfigError
from b2bkg.io import FileWriter
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits
from b2bkg.pxd.models.event_gan import ConditionalBatchNorm, EventGanConfig, EventGenerator
from b2bkg.pxd.models.gan_stats import (
    StatsMatcher, digits_level_fractions, event_factor_loadings, init_event_factors, init_event_offsets, init_event_spread,
    level_fractions, valid_cells,
)
from b2bkg.pxd.models.iea_gan import IeaGanConfig, IeaGenerator
from b2bkg.pxd.models.pxd_data import event_images
from b2bkg.pxd.models.wgan import Critic, Generator, WganConfig
from b2bkg.training.distributed import DistInfo
from b2bkg.training.registry import get_family
from b2bkg.training.trainer import TrainState, resolve_config

LEVELS = (7, 12, 30)


def _digits(rng, n_events=3, hits=40) -> PxdDigits:
    events = []
    for _ in range(n_events):
        key = np.unique(rng.integers(0, N_SENSORS * N_UCELLS * N_VCELLS, hits))
        events.append({"sensor": key // (N_UCELLS * N_VCELLS), "ucell": key // N_VCELLS % N_UCELLS, "vcell": key % N_VCELLS,
                       "charge": rng.integers(7, 120, len(key))})
    return PxdDigits.from_events(events)


@pytest.mark.parametrize("factor", [(1, 1), (8, 8)])
def test_level_fractions_of_images_equal_those_of_the_digits(factor):
    """Forward values are the exact hard counts: dense images of real events give the sparse result."""
    d = _digits(np.random.default_rng(1), n_events=2)
    ref = digits_level_fractions(d, LEVELS)  # (2, 40, 3)
    naive = np.zeros_like(ref)
    ev = d.event_index()
    for k, q in enumerate(LEVELS):
        np.add.at(naive[:, :, k], (ev, d.sensor.astype(int)), (d.charge >= q).astype(float))
    np.testing.assert_allclose(ref, naive / (N_UCELLS * N_VCELLS))
    x = event_images(d, [0, 1], factor)  # (2, 40, fr*fc, R, C)
    got = level_fractions(x.reshape(2, N_SENSORS, -1), valid_cells(factor), LEVELS)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6)


def test_valid_cells_drop_the_padding_rows():
    v = valid_cells((8, 8))
    assert v.shape == (64 * 32 * 96,) and int(v.sum()) == N_UCELLS * N_VCELLS
    assert int(valid_cells((1, 1)).sum()) == N_UCELLS * N_VCELLS


def test_matcher_is_zero_on_the_data_and_pulls_occupancy_to_target():
    f = np.array([[[0.010, 0.005], [0.020, 0.004]], [[0.014, 0.006], [0.016, 0.005]]])  # (N=2, G=2, K=2)
    m = StatsMatcher(2, levels_adu=(7, 20), ema_decay=0.9)
    m.set_targets(f)
    # a batch whose fractions are exactly the data's: every term vanishes
    p = 1000
    x = torch.full((2, 2, p), -1.0)
    for b in range(2):
        for g in range(2):
            n0, n1 = int(round(f[b, g, 0] * p)), int(round(f[b, g, 1] * p))
            x[b, g, :n1] = 0.9  # >= 20 ADU
            x[b, g, n1:n0] = -0.2  # 7..19 ADU
    valid = torch.ones(p, dtype=torch.bool)
    terms = m.loss(x, valid, update=False)
    for k, v in terms.items():
        assert float(v) == pytest.approx(0.0, abs=1e-8), k
    # too few hits: gradient descent on the occupancy term raises the occupancy toward the target
    y = torch.full((1, 2, p), -0.5, requires_grad=True)
    opt = torch.optim.Adam([y], lr=0.02)
    before = m.loss(y, valid, update=False)["occ"].item()
    for _ in range(30):
        opt.zero_grad()
        m.loss(y, valid)["occ"].backward()
        opt.step()
    occ = level_fractions(y.detach(), valid, (7,))[0, :, 0]
    assert before > 1.0 and (occ > 0).all()
    assert int(m.ema_steps) == 30


def test_matcher_errors():
    with pytest.raises(ConfigError, match="increasing"):
        StatsMatcher(1, levels_adu=(9, 7))
    m = StatsMatcher(2, levels_adu=(7,))
    with pytest.raises(ConfigError, match="expected"):
        m.set_targets(np.zeros((5, 3, 1)))
    with pytest.raises(RuntimeError, match="set_targets"):
        m.loss(torch.zeros(1, 2, 4), torch.ones(4, dtype=torch.bool))


def test_event_norm_is_per_event_and_the_same_in_training_and_sampling():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm(3, 2, group=4)
    h, c = torch.randn(8, 3, 5, 5), torch.randn(8, 2)
    a = cbn.train()(h, c)
    assert torch.allclose(a, cbn.eval()(h, c))
    assert torch.allclose(a[:4], cbn(h[:4], c[:4]), atol=1e-6)  # event 0 alone gives the same
    n = cbn(h, torch.zeros(8, 2))[:4].permute(1, 0, 2, 3).reshape(3, -1)  # condition 0: the bare norm
    assert torch.allclose(n.mean(1), torch.zeros(3), atol=1e-5) and torch.allclose(n.std(1, unbiased=False), torch.ones(3), atol=1e-3)


@pytest.mark.parametrize("name", ["pxd-event-gan", "pxd-iea-gan", "pxd-wgan"])
def test_small_config_step_uses_the_matching_terms(name, tmp_path):
    """The small presets switch the matching on: prepare() sets the data targets from the training
    file, the generator step logs finite terms and folds the batch into the running statistics."""
    path = tmp_path / "t.h5"
    with FileWriter(path, seed=1, command="test") as w:
        w.append(pxd=_digits(np.random.default_rng(2), n_events=3, hits=400))
    fam = get_family(name)
    cfg = resolve_config(fam, "small", ["n_critic=1"] if name != "pxd-iea-gan" else ["n_dis=1"])
    assert cfg.uses_stats
    torch.manual_seed(0)
    modules = fam.build(cfg)
    data = fam.make_data(cfg, path, seed=0)
    fam.prepare(cfg, modules, data)
    stats = modules["stats"]
    assert bool(stats.ready) and (stats.target_occ > 0).all()
    state = TrainState(cfg, modules, fam.optimizers(cfg, modules), torch.device("cpu"), DistInfo(), data)
    losses = fam.step(state, data.next(), 0)
    assert {"fm_occ", "fm_cov", "fm_charge"} <= set(losses)
    assert all(np.isfinite(v) for v in losses.values())
    assert int(stats.ema_steps) == 1 and float(stats.ema_occ.sum()) > 0


def _correlated_digits(rng, n_events, lam, a) -> tuple[PxdDigits, np.ndarray]:
    """Events whose sensor s has Poisson(lam * exp(a[s] u)) hits, u ~ N(0, 1) per event (one shared
    beam-background factor), at random pixels; returns the digits and u."""
    u = rng.standard_normal(n_events)
    events = []
    for e in range(n_events):
        k = rng.poisson(lam * np.exp(a * u[e]))
        s = np.repeat(np.arange(N_SENSORS), k)
        key = np.unique(s * (N_UCELLS * N_VCELLS) + rng.integers(0, N_UCELLS * N_VCELLS, len(s)))
        events.append({"sensor": key // (N_UCELLS * N_VCELLS), "ucell": key // N_VCELLS % N_UCELLS, "vcell": key % N_VCELLS,
                       "charge": rng.integers(7, 120, len(key))})
    return PxdDigits.from_events(events), u


def test_event_factor_loadings_find_the_shared_factor():
    rng = np.random.default_rng(4)
    a = 0.1 + 0.1 * (np.arange(N_SENSORS) % 3)  # sensor responses to the event factor
    u = rng.standard_normal(400)
    occ = 0.01 * np.exp(a[None] * u[:, None] + 0.02 * rng.standard_normal((400, N_SENSORS)))
    lo = event_factor_loadings(occ, 2)
    assert lo.shape == (N_SENSORS, 2)
    want = a * u.std()
    np.testing.assert_allclose(lo[:, 0], want, rtol=0.05)  # sign: u > 0 = more background
    assert np.abs(lo[:, 1]).max() < 0.05 * want.max()  # nothing else is shared
    np.testing.assert_allclose(event_factor_loadings(0.01 * np.exp(-a[None] * u[:, None]), 1),
                               event_factor_loadings(0.01 * np.exp(a[None] * u[:, None]), 1), rtol=1e-4)  # u -> -u: the same
    mixed = np.where(np.arange(N_SENSORS) < 30, a, -a)  # 10 sensors anti-correlated with the others keep their sign
    np.testing.assert_allclose(event_factor_loadings(0.01 * np.exp(mixed[None] * u[:, None]), 1)[:, 0], mixed * u.std(), rtol=1e-3)


def test_init_event_factors_gives_the_generator_the_data_occupancy_covariance():
    """After the offsets and the event factors are initialised from data with one shared factor, moving
    the generator's event latent u by +-1 moves each sensor's log occupancy by +- its data loading."""
    rng = np.random.default_rng(5)
    a = 0.1 + 0.1 * (np.arange(N_SENSORS) % 3)
    digits, _ = _correlated_digits(rng, 24, 1500.0, a)
    cfg = IeaGanConfig(grid_factor=(8, 8), latent_dim=2, embed_dim=4, heads=1, base_grid=(16, 48), channels=(4,), noise_channels=1,
                       critic_channels=(2, 2), out_bias_init=-1.5, init_occupancy=True, event_factors=1)
    torch.manual_seed(0)
    g = IeaGenerator(cfg).eval()
    init_event_offsets(cfg, g, digits, (N_SENSORS, cfg.latent_dim), events=1)
    scale = init_event_factors(cfg, g, digits, (N_SENSORS, cfg.latent_dim), events=1)
    assert scale.shape == (N_SENSORS, 1) and (scale > 0).all()
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(1, N_SENSORS, cfg.latent_dim, generator=gen)
    noise = [torch.randn(1, *sh, generator=gen) for sh in g.noise_shapes()[:-1]]
    valid = valid_cells(cfg.grid_factor)
    logs = []
    for u in (1.0, -1.0):
        with torch.no_grad():
            x = g(z, noise + [torch.full((1, 1), u)])
        logs.append(torch.log(level_fractions(x.reshape(1, N_SENSORS, -1), valid, (7,))[..., 0].mean(0)).numpy())
    want = event_factor_loadings(digits_level_fractions(digits, (7,))[..., 0], 1)[:, 0]
    got = (logs[0] - logs[1]) / 2
    assert np.corrcoef(got, want)[0, 1] > 0.95
    np.testing.assert_allclose(got.mean(), want.mean(), rtol=0.15)
    cfg_off = IeaGanConfig(**{**cfg.__dict__, "init_occupancy": False})
    assert init_event_factors(cfg_off, g, digits, (N_SENSORS, cfg.latent_dim)) is None


@pytest.mark.parametrize("groups", [2, 4])
def test_cov_term_weighs_the_spread_of_each_group_as_much_as_the_shared_part(groups):
    """Generated events whose log occupancies swing twice as far as the data's (variance x 4, no
    correlation in either): every diagonal entry is off by 3 data variances and the cov term is 9 /
    (1 - decay) whatever the number of groups (not 9 / G, as a mean over all G x G entries gives)."""
    h = np.array([[1, 1, 1, 1, 1, 1, 1, 1], [1, -1, 1, -1, 1, -1, 1, -1], [1, 1, -1, -1, 1, 1, -1, -1],
                  [1, -1, -1, 1, 1, -1, -1, 1], [1, 1, 1, 1, -1, -1, -1, -1]])[1:1 + groups].T  # (8 events, G): orthogonal, zero mean
    p = 10000

    def events(amp):  # (8, G, p) images whose occupancy is 0.02 * exp(amp * h) (all hits far above every level)
        m = np.rint(p * 0.02 * np.exp(amp * h)).astype(int)
        x = -torch.ones(8, groups, p)
        for e in range(8):
            for g in range(groups):
                x[e, g, :m[e, g]] = 1.0
        return x

    valid = torch.ones(p, dtype=torch.bool)
    m = StatsMatcher(n_groups=groups, levels_adu=(7, 20), ema_decay=0.9)
    m.set_targets(level_fractions(events(0.3), valid, (7, 20)))
    assert float(m.loss(events(0.3), valid, update=False)["cov"]) < 1e-3
    np.testing.assert_allclose(float(m.loss(events(0.6), valid, update=False)["cov"]), 9.0 / 0.1, rtol=0.05)  # rounding of the hit counts


def test_init_event_spread_matches_the_data_spread_not_explained_by_the_factors():
    """A generator whose sensors swing far more from event to event than the data's is scaled down
    to the data's idiosyncratic spread (measured on fresh draws); one with no spread of its own is
    left alone; off without ``init_spread``."""
    rng = np.random.default_rng(6)
    a = 0.1 + 0.1 * (np.arange(N_SENSORS) % 3)
    digits, _ = _correlated_digits(rng, 24, 1500.0, a)
    occ = digits_level_fractions(digits, (7,))[..., 0]
    lo = event_factor_loadings(occ, 1)
    var = np.log(occ).var(0, ddof=1)
    target = float(np.maximum(var - (lo * lo).sum(1), 0.1 * var).mean())
    cfg = EventGanConfig(grid_factor=(8, 8), latent_dim=2, sensor_latent_dim=2, sensor_dim=2, base_grid=(16, 48), channels=(4,),
                         noise_channels=1, critic_channels=(2, 2), out_bias_init=-1.5, init_occupancy=True, init_spread=True,
                         event_factors=1)
    torch.manual_seed(0)
    g = EventGenerator(cfg).eval()
    with torch.no_grad():
        g.to_sensors.weight.mul_(5.0)  # far too much spread (measured: 25 x the target)
    init_event_offsets(cfg, g, digits, (cfg.latent_dim,), events=2)
    w = g.to_sensors.weight.detach().clone()
    alpha = init_event_spread(cfg, g, digits, (cfg.latent_dim,), events=16)
    assert 0.0 < alpha < 0.5
    torch.testing.assert_close(g.to_sensors.weight.detach(), w * alpha)
    gen = torch.Generator().manual_seed(7)  # fresh draws (sensor_scale is still 0: the factors are off)
    z = torch.randn(32, cfg.latent_dim, generator=gen)
    noise = [torch.randn(32, *sh, generator=gen) for sh in g.noise_shapes()]
    with torch.no_grad():
        x = g(z, noise)
    got = float(torch.log(level_fractions(x.reshape(32, N_SENSORS, -1), valid_cells(cfg.grid_factor), (7,))[..., 0]).var(0).mean())
    assert 0.5 * target < got < 2.0 * target
    with torch.no_grad():
        g.to_sensors.weight.zero_()  # no spread of its own: nothing to take away
    assert init_event_spread(cfg, g, digits, (cfg.latent_dim,)) == 1.0
    assert init_event_spread(EventGanConfig(**{**cfg.__dict__, "init_spread": False}), g, digits, (cfg.latent_dim,)) is None


def test_coarse_wgan_emits_cells_of_the_full_image():
    cfg = WganConfig(latent_dim=4, base_grid=(4, 12), channels=(4, 4, 4), kernel=3, critic_channels=(2, 2), grid_factor=(8, 8))
    assert cfg.grid == (32, 96) and cfg.cell_channels == 64
    g, d = Generator(cfg), Critic(cfg)
    x = g(torch.randn(2, 4))
    assert x.shape == (2, 64, 32, 96) and d(x).shape == (2, 1)
    with pytest.raises(ConfigError, match="grid_factor"):
        WganConfig(grid_factor=(3, 8))
    with pytest.raises(ConfigError, match="grid_factor"):
        WganConfig(grid_factor=(8, 8))  # the paper's five blocks end on 256 x 768 > 32 x 96
