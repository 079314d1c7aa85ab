"""Exponential moving average of a module's weights (the generator's, typically).

``shadow = decay * shadow + (1 - decay) * weights`` after every optimizer step of the trainer;
buffers (e.g. BatchNorm running stats) are copied. The shadow is a full copy of the module, so it
can be used for sampling as is.

Example:
    >>> import torch
    >>> m = torch.nn.Linear(2, 1)
    >>> ema = Ema(m, decay=0.5)
    >>> with torch.no_grad(): _ = m.weight.add_(1.0)
    >>> ema.update(m)
    >>> bool(torch.allclose(ema.module.weight, m.weight - 0.5))
    True
"""

from __future__ import annotations

import copy

import torch

__all__ = ["Ema"]


class Ema:
    """EMA shadow of ``module`` with decay ``decay`` (0 < decay < 1)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        src = dict(module.named_parameters())
        for name, p in self.module.named_parameters():
            p.lerp_(src[name].detach(), 1.0 - self.decay)
        bufs = dict(module.named_buffers())
        for name, b in self.module.named_buffers():
            b.copy_(bufs[name])

    @torch.no_grad()
    def reset(self, module: torch.nn.Module) -> None:
        """Make the shadow an exact copy of ``module``'s current weights and buffers."""
        self.module.load_state_dict(module.state_dict())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
