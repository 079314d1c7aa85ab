"""``ecl-cov``: the covariance-matrix baseline of seed 004 (fit-only).

Per crystal ``c`` (ring ``r``) the waveform is sampled as::

    w = pedestal[c] + s[c] * (mean[r] + L[r] z),     z ~ N(0, 1)^31,   L[r] L[r]^T = C[r]

with ``pedestal`` (8736,) the crystal's fitted mean (ADC), ``mean`` (69, 31) and ``C`` (69, 31, 31)
the ring's mean and covariance of the residual ``(w - pedestal[c]) / s[c]``, ``s[c]``
the crystal's robust noise level (``crystal_scale: true``; else ``s = 1`` and ``C`` is the raw
covariance). All fitted from the non-selected waveforms of ``--data``. Every waveform is drawn
independently: no pile-up tails beyond the covariance, no event-level correlation, which is why
the seed calls it a baseline.

Example:
    $ b2bkg train ecl-cov --data train.h5 --out runs/ecl-cov
    $ b2bkg generate --model runs/ecl-cov --events 10 --seed 1 --out cov.h5
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from b2bkg.ecl.geometry import N_CRYSTALS, N_RINGS
from b2bkg.training.registry import register
from b2bkg.training.sampling import event_generators

from .common import EclFamily, EclTrainConfig
from .data import N_SAMPLES, _ring_of_crystal, fit_normalization, load_ecl_data, ring_blocks

__all__ = ["EclCovConfig", "CovSampler", "EclCov", "ring_moments"]


@dataclass(frozen=True)
class EclCovConfig(EclTrainConfig):
    """``ecl-cov``: ``crystal_scale`` divides each crystal's residual by its robust noise level
    before the ring covariance is pooled (and multiplies it back when sampling)."""

    max_steps: int = 1
    crystal_scale: bool = True


class CovSampler(nn.Module):
    """Per-ring Gaussian sampler. Buffers: ``pedestal`` (8736,), ``noise_sd`` (8736,) ADC,
    ``mean`` (69, 31) and ``chol`` (69, 31, 31) lower Cholesky factors, in units of noise_sd."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pedestal", torch.full((N_CRYSTALS,), 3000.0))
        self.register_buffer("noise_sd", torch.ones(N_CRYSTALS))
        self.register_buffer("mean", torch.zeros(N_RINGS, N_SAMPLES))
        self.register_buffer("chol", torch.eye(N_SAMPLES).repeat(N_RINGS, 1, 1))
        self.register_buffer("ring", torch.as_tensor(_ring_of_crystal(), dtype=torch.int64), persistent=False)
        self._blocks = ring_blocks()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, 8736, 31) standard normal -> waveforms (B, 8736, 31) float ADC."""
        out = torch.empty_like(z)
        for r0, nr, size, c0 in self._blocks:  # 6 blocks of equal-size rings
            zb = z[:, c0:c0 + nr * size].reshape(z.shape[0], nr, size, N_SAMPLES)  # (B, R, S, 31)
            out[:, c0:c0 + nr * size] = torch.einsum("brsi,rji->brsj", zb, self.chol[r0:r0 + nr]).reshape(z.shape[0], nr * size, N_SAMPLES)
        return (out + self.mean[self.ring]) * self.noise_sd[:, None] + self.pedestal[:, None]

    def forward_crystals(self, z: torch.Tensor, crystals: torch.Tensor) -> torch.Tensor:
        """z (C, n, 31) for crystals (C,) -> (C, n, 31) float ADC."""
        r = self.ring[crystals]
        x = torch.einsum("cni,cji->cnj", z, self.chol[r])
        return (x + self.mean[r][:, None, :]) * self.noise_sd[crystals][:, None, None] + self.pedestal[crystals][:, None, None]


def ring_moments(waveforms: np.ndarray, selected: np.ndarray | None, pedestal: np.ndarray, scale: np.ndarray,
                 chunk: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Per-ring mean (69, 31) and covariance (69, 31, 31) of ``(w - pedestal[c]) / scale[c]`` over
    the non-selected waveforms (unbiased, n - 1)."""
    n = len(waveforms)
    s1 = np.zeros((N_RINGS, N_SAMPLES))
    s2 = np.zeros((N_RINGS, N_SAMPLES, N_SAMPLES))
    cnt = np.zeros(N_RINGS)
    for e0 in range(0, n, chunk):
        x = (waveforms[e0:e0 + chunk].astype(np.float64) - pedestal[None, :, None]) / scale[None, :, None]  # (b, 8736, 31)
        k = np.ones(x.shape[:2], bool) if selected is None else ~selected[e0:e0 + chunk]
        x = np.where(k[..., None], x, 0.0)
        for r0, nr, size, c0 in ring_blocks():
            xb = x[:, c0:c0 + nr * size].reshape(len(x), nr, size, N_SAMPLES)
            s1[r0:r0 + nr] += xb.sum(axis=(0, 2))
            s2[r0:r0 + nr] += np.einsum("brsi,brsj->rij", xb, xb, optimize=True)
            cnt[r0:r0 + nr] += k[:, c0:c0 + nr * size].reshape(len(x), nr, size).sum(axis=(0, 2))
    mean = s1 / np.maximum(cnt, 1)[:, None]
    cov = (s2 - cnt[:, None, None] * mean[:, :, None] * mean[:, None, :]) / np.maximum(cnt - 1, 1)[:, None, None]
    return mean, cov


def _cholesky(cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of (R, 31, 31) covariances, with a tiny diagonal jitter."""
    c = cov + np.eye(N_SAMPLES) * (1e-9 + 1e-7 * np.trace(cov, axis1=1, axis2=2) / N_SAMPLES)[:, None, None]
    return np.linalg.cholesky(c)


@register("ecl-cov")
class EclCov(EclFamily):
    config_cls = EclCovConfig
    description = "ECL covariance-matrix baseline: per-ring mean + 31x31 covariance, Cholesky sampling"

    def build(self, cfg):
        return {"sampler": CovSampler()}

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        return load_ecl_data(path, cfg.max_train_events)

    def fit(self, cfg, modules, data, seed):
        """Fill pedestal, noise level, ring means and Cholesky factors from ``data`` (EclData)."""
        stats = fit_normalization(data.waveforms, data.selected)
        ped = stats["pedestal"].astype(np.float64)
        sd = stats["noise_sd"].astype(np.float64) if cfg.crystal_scale else np.ones(N_CRYSTALS)
        mean, cov = ring_moments(data.waveforms, data.selected, ped, sd)
        s = modules["sampler"]
        with torch.no_grad():
            s.pedestal.copy_(torch.as_tensor(ped))
            s.noise_sd.copy_(torch.as_tensor(sd))
            s.mean.copy_(torch.as_tensor(mean))
            s.chol.copy_(torch.as_tensor(_cholesky(cov)))
        return {"n_events": data.n_events, "selected_fraction": float(data.selected.mean()),
                "pedestal_mean_adu": float(ped.mean()), "noise_rms_adu": float(np.sqrt(np.mean(np.diagonal(cov, axis1=1, axis2=2))) * (sd.mean()))}

    def sample_events(self, modules, cfg, events, seed, device):
        z = torch.stack([torch.randn((N_CRYSTALS, N_SAMPLES), generator=g) for g in event_generators(seed, events)])
        return modules["sampler"](z.to(device))

    def sample_crystals(self, modules, cfg, crystals, n, gen):
        z = torch.randn((len(crystals), n, N_SAMPLES), generator=gen)
        return modules["sampler"].forward_crystals(z.to(crystals.device), crystals)
