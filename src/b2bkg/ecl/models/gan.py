"""``ecl-gan``: the 1D convolutional waveform GAN of seed 004, one model for the whole ECL.

Recipe (seed 004 / REFERENCE.md): D:G updates 3:1; batch 128 (the discriminator sees 64 real +
64 generated waveforms per update, the generator 128 generated); 5 % of the labels flipped;
labels smoothed to U(0.7, 1.2) (real) and U(0, 0.3) (fake); binary cross-entropy; the best step
is selected by the lowest mean KS2 over the four metrics on a fixed validation subsample
(``--val``, :func:`b2bkg.ecl.metrics.make_validation_subset`).

What this implementation adds so that one small network serves all 8736 crystals:
  * Normalisation fitted from ``--data`` (:class:`~b2bkg.ecl.models.data.WaveformNorm`, buffers
    of the generator): the network works on ``y = tail * asinh(x / tail)`` with
    ``x = (w - pedestal[c] - ring_shape[r]) / noise_sd[c]``, O(1) values; the per-crystal
    pedestal (~3000 ADC) and noise level are added back after the network.
  * Conditioning on the crystal's theta ring (embedding, 69 rings) in G and D.
  * An *event latent* ``e`` shared by all crystals of an event (next to the per-crystal latent
    ``z``), and a discriminator that, besides judging each waveform, judges *sets* of
    ``set_size`` crystals of one event (DeepSets pooling): the 64 real waveforms of a
    discriminator batch are ``64 / set_size`` events x ``set_size`` crystals, so the event-level
    noise-power correlations (beam conditions, coherent noise) have a gradient.
  * A tiny generator: latent -> Linear -> (C, 16) -> ConvTranspose1d (x2) -> Conv1d -> 31
    samples, plus a linear skip from the latents (the Gaussian part of the noise). For sampling
    the two convolutions, whose input length is fixed, are folded into their equivalent dense
    matrices (exact up to float rounding), which is several times faster on a CPU for tiny
    channel counts: all 8736 waveforms of an event in a few ms on one thread.

Shapes: waveforms (..., 31); ``crystal`` indices 0..8735 (cellId - 1); ``ring`` thetaId 0..68.

Example:
    $ b2bkg train ecl-gan --data train.h5 --val val.h5 --out runs/ecl-gan
    $ b2bkg generate --model runs/ecl-gan --events 100 --seed 1 --out gan.h5 [--keep-from data.h5]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from b2bkg.core.config import check_range
from b2bkg.ecl.geometry import N_CRYSTALS, N_RINGS
from b2bkg.training.registry import register
from b2bkg.training.sampling import event_generators

from .common import EclFamily, EclTrainConfig
from .data import N_SAMPLES, SetBatches, WaveformNorm, fit_normalization, load_ecl_data, ring_blocks

__all__ = ["EclGanConfig", "Generator", "Discriminator", "EclGan", "smoothed_labels"]


@dataclass(frozen=True)
class EclGanConfig(EclTrainConfig):
    """``ecl-gan`` hyper-parameters (see the module docstring).

    Attributes:
        latent_dim: per-crystal latent ``z``; event_latent_dim: per-event latent ``e`` (0: none).
        ring_embed_dim: ring embedding size (G and D).
        g_channels: generator channels C (cost ~ C^2); d_channels: discriminator base channels.
        set_size: crystals of one event per discriminator set (divides batch_size / 2).
        n_critic: discriminator updates per generator update (seed: 3).
        label_flip: probability to swap a real and a fake target (seed: 0.05).
        real_label_lo/hi, fake_label_lo/hi: smoothed targets (seed: 0.7-1.2, 0-0.3).
        set_loss_weight: weight of the event-set terms of the losses.
        tail: asinh compression scale of the normalised waveform (0: none).
        lr_g, lr_d, beta1, beta2: Adam.
        dropout: discriminator dropout.
    """

    batch_size: int = 128
    latent_dim: int = 32
    event_latent_dim: int = 8
    ring_embed_dim: int = 8
    g_channels: int = 4
    d_channels: int = 32
    set_size: int = 8
    n_critic: int = 3
    label_flip: float = 0.05
    real_label_lo: float = 0.7
    real_label_hi: float = 1.2
    fake_label_lo: float = 0.0
    fake_label_hi: float = 0.3
    set_loss_weight: float = 1.0
    tail: float = 4.0
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    dropout: float = 0.2

    def __post_init__(self):
        super().__post_init__()
        check_range("latent_dim", self.latent_dim, 1, 1024)
        check_range("event_latent_dim", self.event_latent_dim, 0, 1024)
        check_range("ring_embed_dim", self.ring_embed_dim, 1, 256)
        check_range("g_channels", self.g_channels, 1, 256)
        check_range("d_channels", self.d_channels, 1, 1024)
        check_range("set_size", self.set_size, 1, 1024)
        check_range("n_critic", self.n_critic, 1, 100)
        check_range("label_flip", self.label_flip, 0.0, 0.5)
        check_range("real_label_lo", self.real_label_lo, 0.0, 2.0)
        check_range("real_label_hi", self.real_label_hi, self.real_label_lo, 2.0)
        check_range("fake_label_lo", self.fake_label_lo, -1.0, 1.0)
        check_range("fake_label_hi", self.fake_label_hi, self.fake_label_lo, 1.0)
        check_range("set_loss_weight", self.set_loss_weight, 0.0, 100.0)
        check_range("tail", self.tail, 0.0, 1000.0)
        check_range("lr_g", self.lr_g, 0.0, 1.0)
        check_range("lr_d", self.lr_d, 0.0, 1.0)
        check_range("dropout", self.dropout, 0.0, 0.9)
        if (self.batch_size // 2) % self.set_size or self.batch_size % 2:
            from b2bkg.core.errors import ConfigError

            raise ConfigError(f"set_size: {self.set_size} must divide batch_size / 2 = {self.batch_size / 2:g} "
                              f"(batch_size {self.batch_size}: half real, half generated)")


def _dense_equivalent(layer: nn.Module, c_in: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv layer on inputs (c_in, length) as ``flat @ W + b``: W (c_in*length, out), b (out,)."""
    n = c_in * length
    p = next(layer.parameters())
    eye = torch.eye(n, dtype=p.dtype, device=p.device).view(n, c_in, length)
    b = layer(torch.zeros(1, c_in, length, dtype=p.dtype, device=p.device)).reshape(-1)
    return layer(eye).reshape(n, -1) - b, b


class Generator(nn.Module):
    """Waveform generator: (z, e, ring) -> y, normalised waveform (..., 31); buffers ``norm``.

    Args (forward):
        z: per-crystal latent (..., latent_dim); e: event latent (..., event_latent_dim),
        broadcast against z; ring: thetaId (...) int64.
    """

    L0 = 16  # length before the x2 up-sampling (32 -> crop 31)

    def __init__(self, cfg: EclGanConfig):
        super().__init__()
        c, d_in = cfg.g_channels, cfg.latent_dim + cfg.event_latent_dim + cfg.ring_embed_dim
        self.c, self.d_e = c, cfg.event_latent_dim
        self.ring_emb = nn.Embedding(N_RINGS, cfg.ring_embed_dim)
        self.fc = nn.Linear(d_in, c * self.L0)
        self.up = nn.ConvTranspose1d(c, c, 4, stride=2, padding=1)  # (C, 16) -> (C, 32)
        self.out = nn.Conv1d(c, 1, 5, padding=2)  # (C, 32) -> (1, 32)
        self.skip = nn.Linear(d_in, N_SAMPLES)
        # per-ring linear map of z: the Gaussian part of the noise with the ring's autocovariance
        eye = torch.eye(N_SAMPLES, cfg.latent_dim)
        self.ring_mix = nn.Parameter(eye.repeat(N_RINGS, 1, 1))  # (69, 31, latent_dim)
        self.norm = WaveformNorm(cfg.tail)
        self._blocks = ring_blocks()
        # start close to a per-ring Gaussian (ring_mix is set from the data on the first step):
        # small non-linear paths, and an event latent whose influence must be learned
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()
            self.skip.weight.mul_(0.1)
            self.skip.bias.zero_()
        self.event_gain = nn.Parameter(torch.tensor(0.1))
        self.register_buffer("initialized", torch.zeros(()))  # 1 once fitted from the data

    @torch.no_grad()
    def init_from_data(self, stats: dict, ring_chol: torch.Tensor) -> None:
        """Fill the normalisation buffers and start ``ring_mix`` at the rings' Cholesky factors
        (69, 31, 31) of the normalised data (``ecl-cov`` in normalised space)."""
        self.norm.load_stats(stats)
        self.ring_mix.zero_()
        k = min(self.ring_mix.shape[-1], N_SAMPLES)
        self.ring_mix[:, :, :k] = ring_chol.to(self.ring_mix)[:, :, :k]
        self.initialized.fill_(1.0)

    def _ring_linear(self, z: torch.Tensor, ring: torch.Tensor, all_crystals: bool) -> torch.Tensor:
        """ring_mix[ring] @ z: z (..., latent_dim) -> (..., 31); ``all_crystals``: z is
        (B, 8736, latent_dim) in crystal order, done as per-ring-block batched products."""
        if not all_crystals:
            return torch.einsum("...ij,...j->...i", self.ring_mix[ring], z.expand(*ring.shape, z.shape[-1]))
        out = z.new_empty(*z.shape[:-1], N_SAMPLES)
        b = z.shape[0]
        for r0, nr, size, c0 in self._blocks:  # 6 blocks of equal-size rings
            zb = z[:, c0:c0 + nr * size].reshape(b, nr, size, -1)
            out[:, c0:c0 + nr * size] = torch.einsum("brsj,rij->brsi", zb, self.ring_mix[r0:r0 + nr]).reshape(b, nr * size, N_SAMPLES)
        return out

    def _input(self, z, e, ring):
        lead = torch.broadcast_shapes(z.shape[:-1], ring.shape)
        parts = [z.expand(*lead, z.shape[-1])]
        if self.d_e:
            parts.append(self.event_gain * e.expand(*lead, self.d_e))
        r = self.ring_emb(ring)
        parts.append(r.expand(*lead, r.shape[-1]))
        return torch.cat(parts, dim=-1)

    def forward(self, z: torch.Tensor, e: torch.Tensor | None, ring: torch.Tensor, all_crystals: bool = False) -> torch.Tensor:
        lin = self._ring_linear(z, ring, all_crystals)
        x = self._input(z, e, ring)
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        h = self.fc(x)
        if self.training or torch.is_grad_enabled():
            h = F.leaky_relu(h, 0.2)
            h = F.leaky_relu(self.up(h.view(-1, self.c, self.L0)), 0.2)
            y = self.out(h)[:, 0, :N_SAMPLES]
        else:
            F.leaky_relu_(h, 0.2)  # sampling: both convolutions as dense matrices (fixed input lengths)
            w1, b1 = _dense_equivalent(self.up, self.c, self.L0)
            w2, b2 = _dense_equivalent(self.out, self.c, 2 * self.L0)
            h = torch.mm(h, w1).add_(b1)
            F.leaky_relu_(h, 0.2)
            y = torch.mm(h, w2[:, :N_SAMPLES].contiguous()).add_(b2[:N_SAMPLES])
        return (y + self.skip(x)).reshape(*lead, N_SAMPLES) + lin


class Discriminator(nn.Module):
    """Judges waveforms and sets of waveforms of one event.

    forward(y (S, K, 31) normalised waveforms, ring (S, K)) -> (per-waveform logits (S, K),
    per-set logits (S,)).
    """

    def __init__(self, cfg: EclGanConfig):
        super().__init__()
        c, f = cfg.d_channels, 2 * cfg.d_channels
        self.ring_emb = nn.Embedding(N_RINGS, cfg.ring_embed_dim)
        self.conv = nn.Sequential(
            nn.Conv1d(1 + cfg.ring_embed_dim, c, 5, padding=2), nn.LeakyReLU(0.2),
            nn.Conv1d(c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Dropout(cfg.dropout),  # 31 -> 15
            nn.Conv1d(2 * c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Dropout(cfg.dropout),  # 15 -> 7
        )
        self.feat = nn.Sequential(nn.Linear(2 * c * 7 + 2, f), nn.LeakyReLU(0.2))
        self.head = nn.Linear(f, 1)
        self.set_head = nn.Sequential(nn.Linear(2 * f, f), nn.LeakyReLU(0.2), nn.Linear(f, 1))

    def forward(self, y: torch.Tensor, ring: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, k, n = y.shape
        flat = y.reshape(s * k, 1, n)
        emb = self.ring_emb(ring.reshape(-1))[:, :, None].expand(-1, -1, n)
        h = self.conv(torch.cat([flat, emb], dim=1)).flatten(1)  # (S*K, 2c*7)
        # explicit log-variance and mean: the scale of the noise is what matters most
        lv = torch.log(flat[:, 0].var(dim=1, keepdim=True) + 1e-3)
        h = self.feat(torch.cat([h, lv, flat[:, 0].mean(dim=1, keepdim=True)], dim=1))  # (S*K, f)
        logit = self.head(h).view(s, k)
        hs = h.view(s, k, -1)
        pooled = torch.cat([hs.mean(dim=1), hs.std(dim=1, unbiased=False) if k > 1 else torch.zeros_like(hs[:, 0])], dim=1)
        return logit, self.set_head(pooled)[:, 0]


def smoothed_labels(n_real: tuple, n_fake: tuple, cfg: EclGanConfig, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed-recipe targets: real U(real_lo, real_hi), fake U(fake_lo, fake_hi), with a fraction
    ``label_flip`` of each swapped to the other class's range (torch global RNG)."""
    def draw(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, device=device)

    t_real = draw(n_real, cfg.real_label_lo, cfg.real_label_hi)
    t_fake = draw(n_fake, cfg.fake_label_lo, cfg.fake_label_hi)
    if cfg.label_flip > 0:
        fr = torch.rand(n_real, device=device) < cfg.label_flip
        ff = torch.rand(n_fake, device=device) < cfg.label_flip
        t_real = torch.where(fr, draw(n_real, cfg.fake_label_lo, cfg.fake_label_hi), t_real)
        t_fake = torch.where(ff, draw(n_fake, cfg.real_label_lo, cfg.real_label_hi), t_fake)
    return t_real, t_fake


def _bce(logits, target):
    return F.binary_cross_entropy_with_logits(logits, target)


@register("ecl-gan")
class EclGan(EclFamily):
    config_cls = EclGanConfig
    description = "ECL 1D conv waveform GAN (seed 004 recipe), ring-conditioned, event latent"

    def __init__(self):
        self._stats, self._chol = None, None

    def build(self, cfg):
        return {"generator": Generator(cfg), "discriminator": Discriminator(cfg)}

    def optimizers(self, cfg, modules):
        return {
            "generator": torch.optim.Adam(modules["generator"].parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2)),
            "discriminator": torch.optim.Adam(modules["discriminator"].parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2)),
        }

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        from .cov import _cholesky, ring_moments

        data = load_ecl_data(path, cfg.max_train_events)
        # the fitted normalisation and the per-ring Gaussian start of ring_mix are copied into
        # the generator on the first step of a new run (not on resume: they are in the checkpoint)
        self._stats = fit_normalization(data.waveforms, data.selected)
        _, cov = ring_moments(data.waveforms, data.selected, self._stats["pedestal"].astype(np.float64),
                              self._stats["noise_sd"].astype(np.float64))
        self._chol = torch.as_tensor(_cholesky(cov), dtype=torch.float32)
        return SetBatches(data, cfg.set_size, cfg.batch_size // 2 // cfg.set_size, seed, rank, world_size)

    def _ensure_norm(self, g: Generator) -> None:
        if self._stats is not None:
            if not bool(g.initialized):
                g.init_from_data(self._stats, self._chol)
            self._stats = None

    def _fake(self, g: Generator, cfg, crystal: torch.Tensor) -> torch.Tensor:
        """Generated y (S, K, 31) for the crystals (S, K) of S events (torch global RNG)."""
        s, k = crystal.shape
        z = torch.randn(s, k, cfg.latent_dim, device=crystal.device)
        e = torch.randn(s, 1, cfg.event_latent_dim, device=crystal.device) if cfg.event_latent_dim else None
        return g(z, e, g.norm.ring[crystal])

    def step(self, state, batch, step_idx):
        cfg = state.cfg
        g, d = state.modules["generator"], state.modules["discriminator"]
        self._ensure_norm(g)
        norm, lam = g.norm, cfg.set_loss_weight
        for i in range(cfg.n_critic):
            b = batch if i == 0 else state.next_batch()
            ring = norm.ring[b["crystal"]]
            y_real = norm.normalize(b["w"], b["crystal"])  # (S, K, 31)
            with torch.no_grad():
                y_fake = self._fake(g, cfg, b["crystal"])
            lr_, ls_r = d(y_real, ring)
            lf_, ls_f = d(y_fake, ring)
            t_r, t_f = smoothed_labels(lr_.shape, lf_.shape, cfg, state.device)
            ts_r, ts_f = smoothed_labels(ls_r.shape, ls_f.shape, cfg, state.device)
            d_loss = 0.5 * (_bce(lr_, t_r) + _bce(lf_, t_f)) + lam * 0.5 * (_bce(ls_r, ts_r) + _bce(ls_f, ts_f))
            state.update("discriminator", d_loss)
        # generator: batch_size generated waveforms (the crystals of two real batches)
        cr = torch.cat([batch["crystal"], b["crystal"]])
        y = self._fake(g, cfg, cr)
        lw, ls = d(y, norm.ring[cr])
        g_loss = _bce(lw, torch.ones_like(lw)) + lam * _bce(ls, torch.ones_like(ls))
        state.update("generator", g_loss)
        with torch.no_grad():
            acc = 0.5 * ((lr_ > 0).float().mean() + (lf_ < 0).float().mean())
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "d_acc": acc.item()}

    # -- sampling ------------------------------------------------------------------------------
    def sample_events(self, modules, cfg, events, seed, device):
        g: Generator = modules["generator"]
        zs, es = [], []
        for gen in event_generators(seed, events):  # per-event stream: e first, then z
            es.append(torch.randn((1, max(cfg.event_latent_dim, 1)), generator=gen)[:, : cfg.event_latent_dim])
            zs.append(torch.randn((N_CRYSTALS, cfg.latent_dim), generator=gen))
        z = torch.stack(zs).to(device)  # (B, 8736, dz)
        e = torch.stack(es).to(device) if cfg.event_latent_dim else None  # (B, 1, de)
        y = g(z, e, g.norm.ring[None, :], all_crystals=True)  # (B, 8736, 31)
        return g.norm.denormalize(y)

    def sample_crystals(self, modules, cfg, crystals, n, gen):
        g: Generator = modules["generator"]
        e = torch.randn((1, n, max(cfg.event_latent_dim, 1)), generator=gen)[..., : cfg.event_latent_dim]
        z = torch.randn((len(crystals), n, cfg.latent_dim), generator=gen)
        dev = crystals.device
        y = g(z.to(dev), e.to(dev) if cfg.event_latent_dim else None, g.norm.ring[crystals][:, None].expand(-1, n))
        return g.norm.denormalize(y.transpose(0, 1), crystals).transpose(0, 1)  # (C, n, 31)
