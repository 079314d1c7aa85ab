"""PXD image GANs: data pipeline, losses and the structure of the three families' networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import N_SENSORS, PxdDigits
from b2bkg.pxd.images import digits_to_sensor_images
from b2bkg.pxd.models.event_gan import EventCritic, EventGanConfig, EventGenerator
from b2bkg.pxd.models.iea_gan import IeaDiscriminator, IeaGanConfig, IeaGenerator, intra_event_loss, uniformity_loss
from b2bkg.pxd.models.pxd_data import (
    EventImageBatches, SensorImageBatches, depth_to_space, event_images, images_to_digits, space_to_depth,
)
from b2bkg.pxd.models.wgan_family import PxdWganConfig
from b2bkg.training.registry import get_family
from b2bkg.training.trainer import lr_factor, resolve_config

EVENT_TINY = dict(grid_factor=(8, 8), latent_dim=4, sensor_latent_dim=2, sensor_dim=2, base_grid=(16, 48), channels=(4,),
                  noise_channels=1, critic_channels=(2, 2), head_hidden=4)
IEA_TINY = dict(grid_factor=(8, 8), latent_dim=2, embed_dim=4, heads=1, base_grid=(16, 48), channels=(4,), noise_channels=1,
                critic_channels=(2, 2))


@pytest.fixture
def digits():
    # event 0: hits on sensors 0 and 39 incl. the last pixel; event 1: empty; event 2: one hit
    return PxdDigits([0, 3, 3, 4], sensor=[0, 0, 39, 5], ucell=[0, 249, 100, 7], vcell=[0, 767, 300, 8],
                     charge=[7, 255, 30, 12])


@pytest.mark.parametrize("factor", [(1, 1), (2, 2), (8, 8), (4, 8)])
def test_space_to_depth_is_exact_and_maps_cells(factor):
    x = torch.arange(2 * 256 * 768, dtype=torch.float32).view(2, 1, 256, 768)
    y = space_to_depth(x, factor)
    fr, fc = factor
    assert y.shape == (2, fr * fc, 256 // fr, 768 // fc)
    # channel a*fc + b of cell (i, j) is pixel (i*fr + a, j*fc + b)
    i, j, a, b = 3, 5, fr - 1, 0
    assert y[1, a * fc + b, i, j] == x[1, 0, i * fr + a, j * fc + b]
    assert torch.equal(depth_to_space(y, factor), x)


def test_event_images_round_trip_to_digits(digits):
    x = event_images(digits, [0, 1, 2], (8, 8))  # (3, 40, 64, 32, 96)
    assert x.shape == (3, N_SENSORS, 64, 32, 96) and x.min() >= -1 and x.max() <= 1
    back = images_to_digits(x, (8, 8), threshold_adu=7)
    for k in ("offsets", "sensor", "ucell", "vcell", "charge"):
        assert np.array_equal(getattr(back, k), getattr(digits, k)), k
    # threshold on output: the 7-ADU hit goes at 8 ADU
    assert images_to_digits(x, (8, 8), threshold_adu=8).n_hits == digits.n_hits - 1


def test_batches_build_the_right_images(digits):
    sb = SensorImageBatches(digits, 4, seed=0, factor=(2, 2))
    b = sb.next()
    ev = np.repeat(np.arange(3), 40)
    assert b["x"].shape == (4, 4, 128, 384)
    # the images are those of the pairs drawn: rebuild from the sensors and compare one
    state = sb.state_dict()
    sb.load_state_dict(state)
    assert b["sensor"].dtype == torch.int64
    eb = EventImageBatches(digits, 2, seed=0, factor=(8, 8))
    assert eb.next().shape == (2, 40, 64, 32, 96)
    full = digits_to_sensor_images(digits, [0], [39])
    assert torch.equal(space_to_depth(full, (2, 2)), event_images(digits, [0], (2, 2))[:, 39])
    assert len(ev) == 120


def test_config_errors():
    with pytest.raises(ConfigError, match="grid_factor"):
        EventGanConfig(**{**EVENT_TINY, "grid_factor": (3, 8)})
    with pytest.raises(ConfigError, match="internal grid"):
        EventGanConfig(**{**EVENT_TINY, "base_grid": (8, 24)})
    with pytest.raises(ConfigError, match="heads"):
        IeaGanConfig(**{**IEA_TINY, "heads": 3})
    with pytest.raises(ConfigError, match="grid_factor"):
        PxdWganConfig(grid_factor=(2, 2))


def test_wgan_paper_preset_is_table_1():
    fam = get_family("pxd-wgan")
    cfg = resolve_config(fam, "paper")
    assert (cfg.batch_size, cfg.n_critic, cfg.lr, cfg.latent_dim) == (40, 5, 1e-4, 96)
    assert tuple(cfg.channels) == (512, 256, 128, 64, 32) and tuple(cfg.critic_channels) == (32, 64, 128, 256, 512)
    # lr constant for the first half, then linearly to 0
    assert lr_factor(cfg, 0) == 1.0 and lr_factor(cfg, cfg.max_steps // 2 - 1) == 1.0
    assert lr_factor(cfg, 3 * cfg.max_steps // 4) == pytest.approx(0.5)
    assert lr_factor(cfg, cfg.max_steps) == pytest.approx(0.0)
    g = fam.build(cfg)["generator"]
    assert sum(p.numel() for p in g.parameters()) == 20_444_865


def test_event_generator_shares_the_event_latent():
    """All 40 sensors depend on the one event latent z: changing z changes every sensor image."""
    torch.manual_seed(0)
    cfg = EventGanConfig(**EVENT_TINY)
    g = EventGenerator(cfg).eval()
    noise = g.draw_noise(1)
    z = torch.randn(1, cfg.latent_dim)
    with torch.no_grad():
        a, b = g(z, noise), g(z + 1.0, noise)
    changed = (a - b).abs().flatten(2).amax(-1)[0]  # (40,)
    assert (changed > 0).all()
    assert EventCritic(cfg)(a).shape == (1, 1)


@pytest.mark.parametrize("name", ["event", "iea"])
def test_event_factors_shift_each_sensor_by_its_scale_around_the_norms(name):
    """The shared event latent u moves sensor s's pre-tanh output by exactly ``sensor_scale[s] . u``
    on every pixel (added after the event norm, so the norm cannot divide it away); without
    ``event_factors`` there is no such parameter."""
    torch.manual_seed(0)
    if name == "event":
        cfg = EventGanConfig(**EVENT_TINY, event_factors=2)
        g = EventGenerator(cfg).eval()
        with torch.no_grad():  # z then reaches the images only through the event factors
            g.to_sensors.weight.zero_()
        z = torch.randn(1, cfg.latent_dim)
        noise = g.draw_noise(1)
        z2 = z.clone()
        z2[0, :2] += torch.tensor([0.5, -1.0])
        args = (z, noise), (z2, noise)
    else:
        cfg = IeaGanConfig(**IEA_TINY, event_factors=2)
        g = IeaGenerator(cfg).eval()
        z = torch.randn(1, N_SENSORS, cfg.latent_dim)
        noise = g.draw_noise(1)
        assert noise[-1].shape == (1, 2)  # u: the last noise input
        noise2 = noise[:-1] + [noise[-1] + torch.tensor([[0.5, -1.0]])]
        args = (z, noise), (z, noise2)
    assert g.sensor_scale.shape == (N_SENSORS, 2) and not g.sensor_scale.detach().any()
    with torch.no_grad():
        g.sensor_scale.copy_(0.05 * torch.randn(N_SENSORS, 2))
        a, b = (torch.atanh(g(*x).clamp(-0.999, 0.999)).double() for x in args)
    want = (g.sensor_scale.detach().double() @ torch.tensor([0.5, -1.0], dtype=torch.float64))  # (40,)
    inside = (a.abs() < 3) & (b.abs() < 3)  # away from the clamp
    diff = torch.where(inside, b - a, want[None, :, None, None, None])
    assert torch.allclose(diff, want[None, :, None, None, None].expand_as(diff), atol=2e-3)
    plain = (EventGenerator(EventGanConfig(**EVENT_TINY)) if name == "event" else IeaGenerator(IeaGanConfig(**IEA_TINY)))
    assert plain.sensor_scale is None


def test_iea_transformer_relates_the_sensors_of_an_event():
    """Changing the noise of sensor 0 changes the image of sensor 7 (through the transformer) and not
    the images of another event in the batch."""
    torch.manual_seed(0)
    cfg = IeaGanConfig(**IEA_TINY)
    g = IeaGenerator(cfg).eval()
    z = torch.randn(2, N_SENSORS, cfg.latent_dim)
    noise = g.draw_noise(2)
    z2 = z.clone()
    z2[0, 0] += 2.0
    with torch.no_grad():
        a, b = g(z, noise), g(z2, noise)
    assert (a[0, 7] - b[0, 7]).abs().max() > 0
    assert torch.equal(a[1], b[1])
    scores, emb = IeaDiscriminator(cfg)(a)
    assert scores.shape == (2, N_SENSORS) and emb.shape[:2] == (2, N_SENSORS)


def test_intra_event_and_uniformity_losses():
    torch.manual_seed(1)
    e = torch.randn(1, N_SENSORS, 8)
    assert intra_event_loss(e, e).item() == pytest.approx(0.0, abs=1e-6)
    assert intra_event_loss(e, torch.randn(1, N_SENSORS, 8)).item() > 0.01
    # collapsed embeddings (all equal) are the least uniform: loss 0 = log 1; spread ones are negative
    same = torch.ones(1, N_SENSORS, 8)
    assert uniformity_loss(same).item() == pytest.approx(0.0, abs=1e-6)
    assert uniformity_loss(e).item() < -1.0
    # gradients flow to the generated side
    f = torch.randn(1, N_SENSORS, 8, requires_grad=True)
    intra_event_loss(e, f).backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
