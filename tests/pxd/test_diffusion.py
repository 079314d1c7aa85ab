"""``pxd-diffusion``: scheduler math, the U-Net, the count-map decoder, training and generation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from b2bkg.core.errors import ConfigError
from b2bkg.io import Conditions, FileWriter, read_pxd
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits
from b2bkg.pxd.diffusion_schedulers import NoiseSchedule, ddim_sample, ddim_step, ddim_timesteps, ddpm_sample, ddpm_step
from b2bkg.pxd.models.diffusion import (
    DiffusionUNet, condition_features, count_maps, counts_to_x, decode_count_maps, fit_decoder_stats, x_to_counts,
)
from b2bkg.training.registry import get_family
from b2bkg.training.trainer import resolve_config

TINY = {"base_channels": 8, "channel_mults": [1, 2], "emb_dim": 16, "batch_size": 8, "max_steps": 3, "sampler_steps": 3,
        "num_train_timesteps": 50, "log_every": 1, "checkpoint_every": 3, "val_every": 0, "decoder_fit_events": 2,
        "lr_warmup_steps": 0}


# ---------------------------------------------------------------------------------------------
# schedules and samplers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_add_noise_closed_form(kind):
    s = NoiseSchedule(100, kind)
    betas = s.betas.numpy()
    assert np.all((betas > 0) & (betas < 1))
    # abar_t = prod (1 - beta): iterate q(x_t | x_{t-1}) with noise 0 on x0 = 1
    t = 37
    x = 1.0
    for k in range(t + 1):
        x = math.sqrt(1 - betas[k]) * x
    x0, eps = torch.ones(1, 3), torch.full((1, 3), 0.5)
    got = s.add_noise(x0, eps, torch.tensor([t]))
    ab = float(np.prod(1 - betas[: t + 1]))
    assert x == pytest.approx(math.sqrt(ab), rel=1e-9)
    assert torch.allclose(got, torch.full((1, 3), math.sqrt(ab) + 0.5 * math.sqrt(1 - ab), dtype=got.dtype))
    # variance of x_t for x0 = 0 is 1 - abar_t (Monte Carlo, loose)
    z = s.add_noise(torch.zeros(200_000), torch.randn(200_000, generator=torch.Generator().manual_seed(0)), torch.full((200_000,), t))
    assert float(z.var()) == pytest.approx(1 - ab, rel=0.02)


@pytest.mark.parametrize("pred", ["epsilon", "v"])
def test_split_inverts_target(pred):
    s = NoiseSchedule(50, "cosine", prediction_type=pred)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.rand(4, 1, 3, 5, generator=g) * 2 - 1, torch.randn(4, 1, 3, 5, generator=g)
    t = torch.tensor([0, 10, 30, 49])
    x0_hat, eps_hat = s.split(s.add_noise(x0, eps, t), s.target(x0, eps, t), t)
    assert torch.allclose(x0_hat, x0, atol=1e-4) and torch.allclose(eps_hat, eps, atol=1e-4)


def _oracle(s: NoiseSchedule, x0: torch.Tensor):
    """Denoiser that knows x0: returns the exact noise (or v) that takes x0 to x_t."""

    def model(x, t):
        a = s.alphas_cumprod[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return eps if s.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0

    return model


@pytest.mark.parametrize("pred", ["epsilon", "v"])
def test_ddpm_and_ddim_recover_x0_with_true_noise(pred):
    s = NoiseSchedule(40, "linear", beta_end=0.2, prediction_type=pred)
    g = torch.Generator().manual_seed(2)
    x0 = (torch.rand(3, 1, 4, 6, generator=g) * 1.6 - 0.8).double()
    xT = torch.randn(3, 1, 4, 6, generator=g).double()
    # one DDPM step with the true noise at t: the posterior mean of q(x_{t-1} | x_t, x0), which the
    # DDIM formula with eta = 1 writes differently (sqrt(abar') x0 + sqrt(1 - abar' - sigma^2) eps)
    t = 25
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    xt = s.add_noise(x0, eps, torch.full((3,), t))
    out = _oracle(s, x0)(xt, torch.full((3,), t))
    mean = ddpm_step(s, out, t, xt, None, clip_x0=None)
    assert torch.allclose(mean, ddim_step(s, out, t, t - 1, xt, None, eta=1.0, noise=torch.zeros_like(xt)), atol=1e-9)
    # at t = 0 the step returns x0 itself
    x1 = s.add_noise(x0, eps, torch.zeros(3, dtype=torch.long))
    assert torch.allclose(ddpm_step(s, _oracle(s, x0)(x1, torch.zeros(3, dtype=torch.long)), 0, x1, None, clip_x0=None), x0, atol=1e-9)
    # the whole chains land on x0
    noise = lambda _t: torch.randn(x0.shape, generator=g, dtype=x0.dtype)  # noqa: E731
    assert torch.allclose(ddpm_sample(_oracle(s, x0), xT, s, noise), x0, atol=1e-6)
    assert torch.allclose(ddim_sample(_oracle(s, x0), xT, s, steps=5), x0, atol=1e-6)


def test_ddim_deterministic_and_timesteps():
    s = NoiseSchedule(100, "cosine")
    assert ddim_timesteps(s, 5) == [99, 74, 50, 25, 0]
    with pytest.raises(ConfigError, match="sampler_steps"):
        ddim_timesteps(s, 0)
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    model = lambda x, t: net(x) * (1 + t.float().view(-1, 1, 1, 1) / 100)  # noqa: E731
    xT = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a = ddim_sample(model, xT.clone(), s, steps=7)
        torch.randn(10)  # global RNG state must not matter
        b = ddim_sample(model, xT.clone(), s, steps=7)
        c = ddim_sample(model, torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(6)), s, steps=7)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.abs().max()) <= 1.0  # x0 clipped to the data range


def test_schedule_errors():
    with pytest.raises(ConfigError, match="beta_schedule"):
        NoiseSchedule(10, "quadratic")
    with pytest.raises(ConfigError, match="prediction_type"):
        NoiseSchedule(10, prediction_type="x0")


# ---------------------------------------------------------------------------------------------
# network
# ---------------------------------------------------------------------------------------------
def test_unet_shape_and_gradients():
    torch.manual_seed(0)
    net = DiffusionUNet(1, (16, 48), 8, (1, 2, 2), 1, 16)
    x = torch.randn(3, 1, 16, 48)
    cond = condition_features(np.array([[1, 1, 1, 1, 1, 0], [0.6, 1, 1, 1, 1, 0], [1.7, 1.2, 0.9, 1.3, 1, 1]]))
    y = net(x, torch.tensor([0, 10, 999]), torch.tensor([0, 17, 39]), cond)
    assert y.shape == x.shape
    y.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # conditions and sensor change the output
    with torch.no_grad():
        y0 = net(x[:1], torch.tensor([5]), torch.tensor([3]), cond[:1])
        assert not torch.allclose(y0, net(x[:1], torch.tensor([5]), torch.tensor([3]), cond[1:2]))
        assert not torch.allclose(y0, net(x[:1], torch.tensor([5]), torch.tensor([20]), cond[:1]))


def test_condition_features():
    f = condition_features(np.array([[2.0, 1, 0.5, 1, 1, 1]]))
    assert torch.allclose(f, torch.tensor([[math.log(2), 0, math.log(0.5), 0, 0, 1]]), atol=1e-6)


def test_config_checks():
    fam = get_family("pxd-diffusion")
    with pytest.raises(ConfigError, match="grid_factor"):
        resolve_config(fam, "small", ["grid_factor=[7,8]"])
    with pytest.raises(ConfigError, match="sampler"):
        resolve_config(fam, "small", ["sampler=euler"])
    with pytest.raises(ConfigError, match="guidance_scale"):
        resolve_config(fam, "small", ["guidance_scale=2.0"])
    assert resolve_config(fam, "paper").grid == (256, 768)


# ---------------------------------------------------------------------------------------------
# count maps and the decoder
# ---------------------------------------------------------------------------------------------
def _clustered(rng: np.random.Generator, n_events: int) -> PxdDigits:
    """Events of 1x1, 1x2 and 2x2 clusters (7..60 ADU) on random sensors."""
    shapes = [(np.array([0]), np.array([0])), (np.array([0, 0]), np.array([0, 1])), (np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))]
    events = []
    for _ in range(n_events):
        keys = []
        for du, dv in shapes:
            n = int(rng.integers(30, 80))
            s, u, v = rng.integers(0, N_SENSORS, n), rng.integers(0, N_UCELLS - 1, n), rng.integers(0, N_VCELLS - 1, n)
            keys.append(((np.repeat(s, len(du)) * N_UCELLS + (u[:, None] + du).ravel()) * N_VCELLS + (v[:, None] + dv).ravel()))
        key = np.unique(np.concatenate(keys))
        events.append({"sensor": key // (N_UCELLS * N_VCELLS), "ucell": key // N_VCELLS % N_UCELLS, "vcell": key % N_VCELLS,
                       "charge": rng.integers(7, 60, len(key))})
    return PxdDigits.from_events(events)


def test_count_maps_and_transform():
    d = PxdDigits([0, 3], sensor=[2, 2, 39], ucell=[0, 15, 249], vcell=[0, 15, 767], charge=[9, 9, 9])
    c = count_maps(d, (16, 16))
    assert c.shape == (1, 40, 16, 48) and c.sum() == 3
    assert c[0, 2, 0, 0] == 2 and c[0, 39, 15, 47] == 1
    n = torch.tensor([0.0, 1.0, 5.0, 256.0])
    x = counts_to_x(n, 256)
    assert float(x[0]) == -1.0 and float(x[-1]) == pytest.approx(1.0)
    assert torch.allclose(x_to_counts(x, 256), n, atol=1e-3)


def test_decoder_keeps_counts_spectrum_and_range():
    rng = np.random.default_rng(0)
    d = _clustered(rng, 3)
    stats = fit_decoder_stats(d)
    assert stats["size_hist"][:, 1:5].sum() == stats["size_hist"].sum()  # sizes 1, 2, 4 (and 3 from overlaps)
    counts = count_maps(d, (16, 16))[0].astype(np.float64)
    a = decode_count_maps(counts, (16, 16), stats, np.random.default_rng(7))
    b = decode_count_maps(counts, (16, 16), stats, np.random.default_rng(7))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    e = PxdDigits.from_events([a])
    e.validate()
    assert e.charge.min() >= 7 and e.ucell.max() < N_UCELLS and e.vcell.max() < N_VCELLS
    # integer counts: the same fired pixels per sensor up to clusters running off the sensor or overlapping
    per_sensor = np.bincount(e.sensor, minlength=N_SENSORS)
    assert abs(per_sensor.sum() - counts.sum()) <= 0.05 * counts.sum()
    assert np.corrcoef(per_sensor, counts.sum((1, 2)))[0, 1] > 0.9
    # charges come from the fitted spectrum (7..59 ADU, clusters may add on overlaps)
    assert np.mean(e.charge < 60) > 0.97


def _diagonal_pairs(rng: np.random.Generator, n_events: int) -> PxdDigits:
    """Events of 2-pixel clusters along the anti-diagonal (u+1, v-1): u- and v-extent 2, negative u-v correlation."""
    events = []
    for _ in range(n_events):
        n = 60
        s, u, v = rng.integers(0, N_SENSORS, n), rng.integers(0, N_UCELLS - 1, n), rng.integers(1, N_VCELLS, n)
        key = np.unique(np.r_[(s * N_UCELLS + u) * N_VCELLS + v, (s * N_UCELLS + u + 1) * N_VCELLS + v - 1])
        events.append({"sensor": key // (N_UCELLS * N_VCELLS), "ucell": key // N_VCELLS % N_UCELLS, "vcell": key % N_VCELLS,
                       "charge": rng.integers(7, 60, len(key))})
    return PxdDigits.from_events(events)


def test_decoder_learns_cluster_boxes_and_orientation():
    from b2bkg.pxd.clusters import find_clusters

    d = _diagonal_pairs(np.random.default_rng(1), 2)
    stats = fit_decoder_stats(d)
    assert stats["flip_frac"][:, 2].max() > 0.95  # pairs are anti-diagonal
    counts = count_maps(d, (16, 16))[0].astype(np.float64)
    e = PxdDigits.from_events([decode_count_maps(counts, (16, 16), stats, np.random.default_rng(3))])
    cl = find_clusters(e)
    two = cl.size == 2
    assert two.mean() > 0.8
    # the learned (u, v) box of size-2 clusters is 2 x 2 (a filled-box decoder would make 1 x 2 or 2 x 1)
    assert np.mean((cl.u_extent[two] == 2) & (cl.v_extent[two] == 2)) > 0.95
    # and the orientation is the anti-diagonal one
    hc = cl.hit_cluster
    du = np.bincount(hc, e.ucell * np.where(np.r_[True, hc[1:] != hc[:-1]], -1.0, 1.0), len(cl.size))
    dv = np.bincount(hc, e.vcell * np.where(np.r_[True, hc[1:] != hc[:-1]], -1.0, 1.0), len(cl.size))
    assert np.mean(du[two] * dv[two] < 0) > 0.95


# ---------------------------------------------------------------------------------------------
# family: training and generation
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("diff") / "train.h5"
    rng = np.random.default_rng(3)
    cond = np.tile([1.0, 1, 1, 1, 1, 0], (4, 1))
    cond[:, 0] = [0.5, 0.8, 1.3, 2.0]
    with FileWriter(path, seed=1, command="test") as w:
        w.append(pxd=_clustered(rng, 4), conditions=Conditions(cond.astype(np.float32), ("lumi", "her_current", "ler_current", "her_vacuum", "ler_vacuum", "injection")))
    return path


def test_family_trains_and_generates(train_file, tmp_path):
    from b2bkg.generate import generate
    from b2bkg.training.trainer import train

    fam = get_family("pxd-diffusion")
    cfg = resolve_config(fam, "small", [f"{k}={v}" for k, v in TINY.items()])
    run = train("pxd-diffusion", train_file, tmp_path / "run", config=cfg, seed=0)
    import csv

    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(math.isfinite(float(r["loss"])) for r in rows)
    out = generate(run, 3, seed=5, out=tmp_path / "g.h5", conditions=train_file, batch_size=2)
    d = read_pxd(out)
    d.validate()
    assert d.n_events == 3 and d.n_hits > 0
    assert d.charge.min() >= 7 and d.ucell.max() < N_UCELLS and d.vcell.max() < N_VCELLS
    # same seed -> same file content, other seed -> other events
    again = read_pxd(generate(run, 3, seed=5, out=tmp_path / "g2.h5", conditions=train_file, batch_size=2))
    other = read_pxd(generate(run, 3, seed=6, out=tmp_path / "g3.h5", conditions=train_file, batch_size=2))
    for k in ("offsets", "sensor", "ucell", "vcell", "charge"):
        assert np.array_equal(getattr(d, k), getattr(again, k))
    assert not np.array_equal(d.offsets, other.offsets) or not np.array_equal(d.ucell, other.ucell)


def _pixel_cfg():
    over = {**TINY, "base_channels": 4, "channel_mults": [1], "emb_dim": 8, "res_blocks": 1, "sampler": "ddpm",
            "num_train_timesteps": 2, "sampler_steps": 1, "cond_dropout": 0.5}
    return resolve_config(get_family("pxd-diffusion"), "paper", [f"{k}={v}" for k, v in over.items()])


def test_pixel_mode_batches(train_file):
    """Full-resolution pixel mode (the paper representation): log-ADU sensor images, padded to 256 rows."""
    cfg = _pixel_cfg()
    batch = get_family("pxd-diffusion").make_data(cfg, train_file, seed=0).next()
    assert batch["x"].shape == (8, 1, 256, 768) and float(batch["x"].min()) == -1.0 and float(batch["x"].max()) > -0.5
    assert batch["cond"].shape == (8, 6) and "charge_hist" not in batch


def test_ddpm_sampler_in_family(train_file):
    fam = get_family("pxd-diffusion")
    cfg = resolve_config(fam, "small", [f"{k}={v}" for k, v in TINY.items()] + ["sampler=ddpm", "num_train_timesteps=5"])
    torch.manual_seed(0)
    modules = fam.build(cfg)
    batch = fam.make_data(cfg, train_file, seed=0).next()
    for k in ("size_hist", "vext_hist", "charge_hist"):
        getattr(modules["decoder"], k).copy_(batch[k])
    modules = {k: m.eval() for k, m in modules.items()}
    cond = Conditions(np.array([[1.0, 1, 1, 1, 1, 0]] * 2, np.float32), ("lumi", "her_current", "ler_current", "her_vacuum", "ler_vacuum", "injection"))
    a = fam.sample(modules, cfg, np.array([4, 5]), 3, torch.device("cpu"), conditions=cond)["pxd"]
    b = fam.sample(modules, cfg, np.array([5]), 3, torch.device("cpu"), conditions=Conditions(cond.values[:1], cond.names))["pxd"]
    a.validate()
    assert a.n_events == 2 and a.n_hits > 0 and a.charge.min() >= 7
    # per-event streams: event 5 is the same alone or in a batch
    e5 = a.slice(1, 2)
    assert np.array_equal(e5.ucell, b.ucell) and np.array_equal(e5.charge, b.charge)


@pytest.mark.slow
def test_pixel_mode_sample(train_file):
    """Pixel mode end to end: 40 full-resolution images per event (minutes on a loaded CPU)."""
    fam = get_family("pxd-diffusion")
    cfg = _pixel_cfg()
    torch.manual_seed(0)
    modules = {k: m.eval() for k, m in fam.build(cfg).items()}
    a = fam.sample(modules, cfg, np.array([4]), 3, torch.device("cpu"))["pxd"]
    b = fam.sample(modules, cfg, np.array([4]), 3, torch.device("cpu"))["pxd"]
    a.validate()
    assert a.n_events == 1 and (a.n_hits == 0 or a.charge.min() >= 7)
    assert np.array_equal(a.ucell, b.ucell) and np.array_equal(a.charge, b.charge)
