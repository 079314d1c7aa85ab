"""GAN losses shared by the WGAN-GP families (PXD image GANs, ECL waveform GAN, toy).

Example:
    >>> import torch
    >>> critic = torch.nn.Linear(3, 1)
    >>> gp = gradient_penalty(critic, torch.randn(8, 3), torch.randn(8, 3))
    >>> gp.shape
    torch.Size([])
"""

from __future__ import annotations

import torch

__all__ = ["gradient_penalty"]


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, *critic_args, **critic_kwargs) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||grad_x D(x)||_2 - 1)^2]`` at random interpolates (Gulrajani et al. 2017).

    Args:
        critic: ``D(x, *critic_args, **critic_kwargs) -> (B,)`` or ``(B, 1)`` scores.
        real, fake: samples of shape ``(B, ...)`` (same shape; ``fake`` may be detached).
        critic_args / critic_kwargs: extra conditioning inputs passed to the critic unchanged.

    Returns:
        scalar tensor, differentiable w.r.t. the critic's parameters (``create_graph=True``).
    Interpolation weights are drawn from torch's global RNG (seeded and checkpointed by the trainer).
    """
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    mix = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    score = critic(mix, *critic_args, **critic_kwargs)
    (grad,) = torch.autograd.grad(score.sum(), mix, create_graph=True)
    return ((grad.reshape(len(grad), -1).norm(dim=1) - 1.0) ** 2).mean()
