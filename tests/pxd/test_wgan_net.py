"""Networks of the paper's PXD WGAN-GP (seed 002, Table 1): sizes, shapes, gradients, config."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from b2bkg.core.config import from_dict, to_dict
from b2bkg.core.errors import ConfigError
from b2bkg.pxd.models.wgan import Critic, Generator, WganConfig, count_parameters


def conv_params(c_in, c_out, k=5):
    return c_in * c_out * k * k + c_out


def test_paper_generator_matches_table_1():
    g = Generator(WganConfig.paper())
    dense = 96 * 512 * 8 * 24 + 512 * 8 * 24
    chans = [512, 512, 256, 128, 64, 32]
    convs = sum(conv_params(a, b) for a, b in zip(chans[:-1], chans[1:]))
    bn = 2 * sum(chans[1:])
    expected = dense + convs + bn + conv_params(32, 1)
    assert count_parameters(g) == expected == 20_444_865  # paper: "20 million parameters, 80 MB"
    assert 81 < expected * 4 / 1e6 < 83  # MB in float32
    kinds = [type(m).__name__ for m in g.blocks]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Upsample"] * 5
    assert all(m.stride == (1, 1) and m.padding == (2, 2) and m.kernel_size == (5, 5)
               for m in g.modules() if isinstance(m, torch.nn.Conv2d))


def test_paper_critic_matches_table_1():
    d = Critic(WganConfig.paper())
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256, 512]
    assert all(c.stride == (2, 2) and c.padding == (2, 2) and c.kernel_size == (5, 5) for c in convs)
    expected = sum(conv_params(a, b) for a, b in zip([1, 32, 64, 128, 256], [32, 64, 128, 256, 512])) + 513
    assert count_parameters(d) == expected
    with torch.no_grad():
        h = d.features(torch.zeros(1, 1, 256, 768))
        assert h.shape == (1, 512, 8, 24)  # five stride-2 convolutions
        assert d(torch.zeros(2, 1, 256, 768)).shape == (2, 1)


def test_paper_generator_output_shape():
    g = Generator(WganConfig.paper()).eval()
    with torch.inference_mode():
        x = g(torch.randn(1, 96))
    assert x.shape == (1, 1, 256, 768) and x.dtype == torch.float32
    assert float(x.abs().max()) <= 1.0


@pytest.mark.parametrize("coarse", [False, True])
def test_small_shapes_range_and_gradients(coarse):
    torch.manual_seed(0)
    cfg = WganConfig.small(coarse=coarse)
    assert cfg.block_grid == ((128, 384) if coarse else (256, 768))
    g, d = Generator(cfg), Critic(cfg)
    z = torch.randn(2, cfg.latent_dim)
    x = g(z)
    assert x.shape == (2, 1, 256, 768)
    assert float(x.detach().abs().max()) <= 1.0
    score = d(x)
    assert score.shape == (2, 1)
    score.sum().backward()
    for name, p in [*g.named_parameters(), *d.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_same_seed_same_output_and_state_round_trip(tmp_path):
    cfg = WganConfig.small()
    torch.manual_seed(1)
    g1 = Generator(cfg).eval()
    torch.manual_seed(1)
    g2 = Generator(cfg).eval()
    z = torch.randn(2, cfg.latent_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = g1(z)
        assert torch.equal(a, g2(z))
        save_file(g1.state_dict(), tmp_path / "g.safetensors")
        torch.manual_seed(2)
        g3 = Generator(cfg).eval()
        assert not torch.equal(g3(z), a)
        g3.load_state_dict(load_file(tmp_path / "g.safetensors"))
        assert torch.equal(g3(z), a)


def test_config_round_trip_and_validation():
    cfg = WganConfig.small(coarse=True)
    assert from_dict(WganConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="kernel"):
        WganConfig(kernel=4)
    with pytest.raises(ConfigError, match="exceeds the image"):
        WganConfig(base_grid=(16, 48))
    with pytest.raises(ConfigError, match="channels"):
        WganConfig(channels=())
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(WganConfig, {"latent": 3})
