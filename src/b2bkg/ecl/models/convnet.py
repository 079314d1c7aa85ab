"""Tiny 1D conv waveform network (the decoder of ``ecl-ae``; it was the first ``ecl-gan`` generator).

latent (..., d) -> Linear -> (C, 16) -> ConvTranspose1d (x2) -> Conv1d -> 31 samples, plus a linear
skip and a per-ring linear map of the latent (the Gaussian part of the noise), on the normalised
waveform of :class:`~b2bkg.ecl.models.data.WaveformNorm`. For sampling the two convolutions,
whose input length is fixed, are folded into their equivalent dense matrices (exact up to float
rounding), several times faster on a CPU for tiny channel counts.

The config passed to :class:`Generator` needs ``latent_dim``, ``event_latent_dim`` (0: none),
``ring_embed_dim``, ``g_channels`` and ``tail``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from b2bkg.ecl.geometry import N_RINGS

from .data import N_SAMPLES, WaveformNorm, ring_blocks

__all__ = ["Generator"]


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

    def __init__(self, cfg):
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
