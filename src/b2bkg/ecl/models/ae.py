"""``ecl-ae``: the autoencoder baseline of seed 004, made generative as a variational autoencoder.

Normalised space :class:`~b2bkg.ecl.models.data.WaveformNorm` and crystal-ring conditioning:
the encoder maps a normalised waveform y (31,) and its ring to ``q(u | y) = N(mu, sigma^2)``
(``latent_dim``); the decoder (the tiny conv network of :mod:`.convnet`, without event latent)
maps ``u`` and the ring to the mean of ``p(y | u)``, a Gaussian with a learned per-ring, per-sample width ``obs_sd`` (69, 31). Loss per waveform:
``-log p(y | u) + beta * KL(q || N(0, 1))``. Generation: ``u ~ N(0, 1)``, ``y = dec(u) + obs_sd * eps``.
Every waveform is drawn independently (no event-level structure), as the seed's baseline.

Example:
    $ b2bkg train ecl-ae --data train.h5 --val val.h5 --out runs/ecl-ae
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from b2bkg.core.config import check_range
from b2bkg.ecl.geometry import N_CRYSTALS, N_RINGS
from b2bkg.training.registry import register
from b2bkg.training.sampling import event_generators

from .common import EclFamily, EclTrainConfig
from .data import N_SAMPLES, SetBatches, fit_normalization, load_ecl_data
from .convnet import Generator

__all__ = ["EclAeConfig", "Encoder", "Decoder", "EclAe"]


@dataclass(frozen=True)
class EclAeConfig(EclTrainConfig):
    """``ecl-ae`` hyper-parameters: latent size, encoder width, decoder channels, KL weight."""

    batch_size: int = 256
    latent_dim: int = 8
    hidden: int = 64
    ring_embed_dim: int = 8
    g_channels: int = 4
    beta: float = 1.0
    tail: float = 4.0
    lr: float = 1e-3
    event_latent_dim = 0  # not a field: the decoder has no event latent

    def __post_init__(self):
        super().__post_init__()
        check_range("latent_dim", self.latent_dim, 1, 256)
        check_range("hidden", self.hidden, 1, 4096)
        check_range("ring_embed_dim", self.ring_embed_dim, 1, 256)
        check_range("g_channels", self.g_channels, 1, 256)
        check_range("beta", self.beta, 0.0, 100.0)
        check_range("tail", self.tail, 0.0, 1000.0)
        check_range("lr", self.lr, 0.0, 1.0)


class Encoder(nn.Module):
    """(y (N, 31), ring (N,)) -> (mu (N, latent_dim), log_var (N, latent_dim))."""

    def __init__(self, cfg: EclAeConfig):
        super().__init__()
        self.ring_emb = nn.Embedding(N_RINGS, cfg.ring_embed_dim)
        self.net = nn.Sequential(
            nn.Linear(N_SAMPLES + cfg.ring_embed_dim, cfg.hidden), nn.LeakyReLU(0.2),
            nn.Linear(cfg.hidden, cfg.hidden), nn.LeakyReLU(0.2), nn.Linear(cfg.hidden, 2 * cfg.latent_dim),
        )

    def forward(self, y, ring):
        mu, log_var = self.net(torch.cat([y, self.ring_emb(ring)], dim=-1)).chunk(2, dim=-1)
        return mu, log_var.clamp(-12.0, 6.0)


class Decoder(nn.Module):
    """u (..., latent_dim), ring (...) -> mean of y (..., 31); ``log_sd`` (69, 31) observation width;
    buffers ``net.norm`` (the fitted normalisation)."""

    def __init__(self, cfg: EclAeConfig):
        super().__init__()
        self.net = Generator(cfg)
        self.log_sd = nn.Parameter(torch.full((N_RINGS, N_SAMPLES), math.log(0.3)))

    @property
    def norm(self):
        return self.net.norm

    def forward(self, u, ring):
        return self.net(u, None, ring)


@register("ecl-ae")
class EclAe(EclFamily):
    config_cls = EclAeConfig
    description = "ECL autoencoder baseline (VAE, ring-conditioned)"

    def __init__(self):
        self._stats = None

    def build(self, cfg):
        return {"encoder": Encoder(cfg), "decoder": Decoder(cfg)}

    def optimizers(self, cfg, modules):
        params = list(modules["encoder"].parameters()) + list(modules["decoder"].parameters())
        return {"vae": torch.optim.Adam(params, lr=cfg.lr)}

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        data = load_ecl_data(path, cfg.max_train_events)
        self._stats = fit_normalization(data.waveforms, data.selected)  # copied into the decoder on step 1
        return SetBatches(data, 1, cfg.batch_size, seed, rank, world_size)

    def step(self, state, batch, step_idx):
        enc, dec = state.modules["encoder"], state.modules["decoder"]
        if self._stats is not None:
            dec.norm.load_stats(self._stats)
            self._stats = None
        crystal = batch["crystal"][:, 0]
        ring = dec.norm.ring[crystal]
        y = dec.norm.normalize(batch["w"][:, 0], crystal)  # (B, 31)
        mu, log_var = enc(y, ring)
        u = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        m = dec(u, ring)
        log_sd = dec.log_sd[ring]
        nll = (0.5 * ((y - m) / log_sd.exp()) ** 2 + log_sd).sum(-1).mean()
        kl = 0.5 * (mu**2 + log_var.exp() - 1.0 - log_var).sum(-1).mean()
        loss = nll + state.cfg.beta * kl
        state.update("vae", loss)
        return {"loss": loss.item(), "nll": nll.item(), "kl": kl.item()}

    def _decode(self, dec, u, eps, ring):
        return dec(u, ring) + dec.log_sd[ring].exp() * eps

    def sample_events(self, modules, cfg, events, seed, device):
        dec = modules["decoder"]
        us, es = [], []
        for g in event_generators(seed, events):
            us.append(torch.randn((N_CRYSTALS, cfg.latent_dim), generator=g))
            es.append(torch.randn((N_CRYSTALS, N_SAMPLES), generator=g))
        u, eps = torch.stack(us).to(device), torch.stack(es).to(device)
        ring = dec.norm.ring[None, :].expand(len(u), -1)
        return dec.norm.denormalize(self._decode(dec, u, eps, ring))

    def sample_crystals(self, modules, cfg, crystals, n, gen):
        dec = modules["decoder"]
        u = torch.randn((len(crystals), n, cfg.latent_dim), generator=gen).to(crystals.device)
        eps = torch.randn((len(crystals), n, N_SAMPLES), generator=gen).to(crystals.device)
        ring = dec.norm.ring[crystals][:, None].expand(-1, n)
        y = self._decode(dec, u, eps, ring)  # (C, n, 31)
        return dec.norm.denormalize(y.transpose(0, 1), crystals).transpose(0, 1)
