"""Noise schedules and samplers of the PXD diffusion model, kept apart from the network.

As in diffusers, the schedule holds no weights: :class:`NoiseSchedule` is the forward process
(the beta schedule, :meth:`~NoiseSchedule.add_noise`, the training target), and the samplers
:func:`ddpm_sample` (ancestral, every step, stochastic) and :func:`ddim_sample` (deterministic
DDIM with ``eta = 0`` on a sub-sequence of a few steps) take the denoiser as an argument, so a
sampler can be swapped without retraining.

Forward process (``T = num_train_timesteps``, ``t = 0 .. T-1`` index the steps 1..T)::

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
    q(x_t | x_0)     = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{s<=t} (1 - beta_s)

Predictions (``prediction_type``): ``epsilon`` (the noise) or ``v`` (``v = sqrt(abar) eps -
sqrt(1-abar) x0``, Salimans & Ho 2022); both are turned into (x0, eps) by
:meth:`NoiseSchedule.split`.

Example:
    >>> import torch
    >>> s = NoiseSchedule(100, "cosine")
    >>> x0 = torch.zeros(2, 1, 4, 4)
    >>> x = ddim_sample(lambda x, t: torch.zeros_like(x), torch.randn(2, 1, 4, 4), s, steps=5)
    >>> tuple(x.shape)
    (2, 1, 4, 4)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from b2bkg.core.errors import ConfigError

__all__ = ["BETA_SCHEDULES", "PREDICTION_TYPES", "NoiseSchedule", "ddpm_step", "ddim_step", "ddim_timesteps",
           "ddpm_sample", "ddim_sample"]

BETA_SCHEDULES = ("linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v")

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``model(x_t, t) -> prediction``: x_t (N, ...) float32, t (N,) int64 step indices 0..T-1."""


def _betas(n: int, kind: str, beta_start: float, beta_end: float) -> torch.Tensor:
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    # cosine (Nichol & Dhariwal 2021): abar(t) = cos^2(((t/T + s) / (1 + s)) pi / 2), betas capped at 0.999
    s = 0.008
    ts = torch.arange(n + 1, dtype=torch.float64) / n
    f = torch.cos((ts + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


class NoiseSchedule:
    """Forward diffusion process with a beta schedule.

    Args:
        num_train_timesteps: T, number of diffusion steps (>= 2).
        beta_schedule: ``linear`` (``beta_start`` .. ``beta_end``, Ho et al. 2020) or ``cosine``.
        prediction_type: what the denoiser predicts: ``epsilon`` or ``v``.

    Attributes (float64 tensors of shape (T,)): ``betas``, ``alphas`` (1 - beta), ``alphas_cumprod`` (abar).
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "cosine", beta_start: float = 1e-4,
                 beta_end: float = 0.02, prediction_type: str = "epsilon"):
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, (int, np.integer)) or num_train_timesteps < 2:
            raise ConfigError(f"num_train_timesteps: {num_train_timesteps!r} must be an integer >= 2")
        if beta_schedule not in BETA_SCHEDULES:
            raise ConfigError(f"beta_schedule: {beta_schedule!r} is not one of {', '.join(BETA_SCHEDULES)}")
        if prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"prediction_type: {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
        if not 0 < beta_start < beta_end < 1:
            raise ConfigError(f"beta_start, beta_end: ({beta_start}, {beta_end}) must satisfy 0 < start < end < 1")
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_schedule, self.prediction_type = beta_schedule, prediction_type
        self.betas = _betas(self.num_train_timesteps, beta_schedule, beta_start, beta_end)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)

    def _abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """abar at step indices ``t`` (N,), shaped (N, 1, ..., 1) to broadcast against ``like``."""
        t = torch.as_tensor(t, dtype=torch.int64).reshape(-1)
        if len(t) and (int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps):
            raise ValueError(f"t: step indices must lie in 0..{self.num_train_timesteps - 1}, got {t.min().item()}..{t.max().item()}")
        a = self.alphas_cumprod[t.cpu()].to(device=like.device, dtype=like.dtype)
        return a.view(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Draw from q(x_t | x_0): ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``; x0, noise (N, ...), t (N,)."""
        a = self._abar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Training target of the denoiser at (x0, noise, t): the noise, or v."""
        if self.prediction_type == "epsilon":
            return noise
        a = self._abar(t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def split(self, x_t: torch.Tensor, model_output: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0 estimate, eps estimate) from the denoiser output at x_t, step indices t (N,)."""
        a = self._abar(t, x_t)
        sa, s1 = a.sqrt(), (1 - a).sqrt()
        if self.prediction_type == "epsilon":
            eps = model_output
            return (x_t - s1 * eps) / sa, eps
        x0 = sa * x_t - s1 * model_output
        return x0, s1 * x_t + sa * model_output

    def __repr__(self) -> str:
        return f"NoiseSchedule(T={self.num_train_timesteps}, {self.beta_schedule}, {self.prediction_type})"


def _full_t(t: int, n: int, device) -> torch.Tensor:
    return torch.full((n,), int(t), dtype=torch.int64, device=device)


def ddpm_step(schedule: NoiseSchedule, model_output: torch.Tensor, t: int, x_t: torch.Tensor,
              noise: torch.Tensor | None = None, clip_x0: float | None = 1.0) -> torch.Tensor:
    """One ancestral DDPM step x_t -> x_{t-1} (Ho et al. 2020, eq. 7, posterior variance beta~).

    Args:
        model_output: denoiser output at (x_t, t), same shape as x_t.
        t: current step index 0..T-1 (at ``t = 0`` the posterior mean, i.e. the x0 estimate, is returned).
        noise: standard normal of x_t's shape for ``t > 0`` (None: no noise, the posterior mean).
        clip_x0: clip the x0 estimate to [-clip, clip] (data range), None: no clipping.
    """
    x0, _ = schedule.split(x_t, model_output, _full_t(t, len(x_t), x_t.device))
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
    if t == 0:
        return x0
    ab, ab_prev = float(schedule.alphas_cumprod[t]), float(schedule.alphas_cumprod[t - 1])
    beta, alpha = float(schedule.betas[t]), float(schedule.alphas[t])
    mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(alpha) * (1 - ab_prev) / (1 - ab)) * x_t
    if noise is None:
        return mean
    var = beta * (1 - ab_prev) / (1 - ab)
    return mean + math.sqrt(var) * noise


def ddim_timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """Descending step indices of a ``steps``-step DDIM sampler: evenly spaced over 0..T-1, ending at 0."""
    T = schedule.num_train_timesteps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= T:
        raise ConfigError(f"sampler_steps: {steps!r} must be an integer in 1..{T} (the training steps)")
    ts = np.round(np.linspace(T - 1, 0, int(steps))).astype(np.int64)
    return [int(t) for t in ts]


def ddim_step(schedule: NoiseSchedule, model_output: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor,
              clip_x0: float | None = 1.0, eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step x_t -> x_{t_prev} (Song et al. 2021, eq. 12); ``t_prev = -1`` means x0.

    ``eta = 0`` is deterministic; ``eta > 0`` needs ``noise`` (standard normal, x_t's shape).
    """
    x0, eps = schedule.split(x_t, model_output, _full_t(t, len(x_t), x_t.device))
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        # re-derive eps from the clipped x0 so that the step stays on the DDIM trajectory
        ab = float(schedule.alphas_cumprod[t])
        eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
    if t_prev < 0:
        return x0
    ab, ab_prev = float(schedule.alphas_cumprod[t]), float(schedule.alphas_cumprod[t_prev])
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
    out = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        if noise is None:
            raise ValueError("ddim_step: eta > 0 needs noise")
        out = out + sigma * noise
    return out


def ddpm_sample(model: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, noise_fn: Callable[[int], torch.Tensor],
                clip_x0: float | None = 1.0) -> torch.Tensor:
    """Ancestral sampling through all T steps.

    Args:
        model: denoiser ``model(x_t, t)``, see :data:`Denoiser`.
        x_T: starting noise, (N, ...) standard normal.
        noise_fn: ``noise_fn(t)`` -> standard normal of x_T's shape for step t (draw it from per-event
            generators for reproducibility).
    Returns:
        x0 sample, x_T's shape.
    """
    x = x_T
    for t in range(schedule.num_train_timesteps - 1, -1, -1):
        out = model(x, _full_t(t, len(x), x.device))
        x = ddpm_step(schedule, out, t, x, noise_fn(t) if t > 0 else None, clip_x0)
    return x


def ddim_sample(model: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int = 25,
                clip_x0: float | None = 1.0, eta: float = 0.0,
                noise_fn: Callable[[int], torch.Tensor] | None = None, timesteps: Sequence[int] | None = None) -> torch.Tensor:
    """DDIM sampling with ``steps`` denoiser calls (deterministic for ``eta = 0``: same x_T, same output).

    Args:
        model: denoiser ``model(x_t, t)``.
        x_T: starting noise, (N, ...) standard normal.
        steps: number of denoiser evaluations (1..T).
        eta: 0 = deterministic DDIM; 1 ~ DDPM-like stochasticity (needs ``noise_fn``).
        timesteps: explicit descending step indices (default :func:`ddim_timesteps`).
    Returns:
        x0 sample, x_T's shape.
    """
    ts = list(timesteps) if timesteps is not None else ddim_timesteps(schedule, steps)
    x = x_T
    for k, t in enumerate(ts):
        t_prev = ts[k + 1] if k + 1 < len(ts) else -1
        out = model(x, _full_t(t, len(x), x.device))
        noise = noise_fn(t) if (eta > 0 and t_prev >= 0 and noise_fn is not None) else None
        x = ddim_step(schedule, out, t, t_prev, x, clip_x0, eta, noise)
    return x
