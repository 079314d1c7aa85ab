"""Per-event random draws for samplers.

Every generated event ``i`` takes its randomness only from ``torch_generator(seed, domain, i)``,
drawn on the CPU and then moved to the device, so the output of a sampler depends on
``(seed, event index)`` only: not on the batch size, the shard, or (for the random numbers
themselves) the device.

Example:
    >>> import numpy as np
    >>> z = event_normal(7, np.arange(4), (3,))
    >>> bool((z[2] == event_normal(7, np.array([2]), (3,))[0]).all())
    True
"""

from __future__ import annotations

import numpy as np
import torch

from b2bkg.core.seeding import torch_generator

__all__ = ["event_normal", "event_uniform", "event_generators"]


def event_generators(seed: int, events, domain: str = "generate") -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per event index of ``events``."""
    return [torch_generator(seed, domain, int(e)) for e in np.asarray(events).reshape(-1)]


def event_normal(seed: int, events, shape: tuple[int, ...], device="cpu", domain: str = "generate",
                 dtype=torch.float32) -> torch.Tensor:
    """Standard-normal tensor of shape ``(len(events), *shape)``; row ``k`` from event ``events[k]``'s stream."""
    gens = event_generators(seed, events, domain)
    if not gens:
        return torch.empty((0, *shape), dtype=dtype, device=device)
    return torch.stack([torch.randn(shape, generator=g, dtype=dtype) for g in gens]).to(device)


def event_uniform(seed: int, events, shape: tuple[int, ...], device="cpu", domain: str = "generate.uniform",
                  dtype=torch.float32) -> torch.Tensor:
    """Uniform [0, 1) tensor of shape ``(len(events), *shape)``, per-event streams as :func:`event_normal`."""
    gens = event_generators(seed, events, domain)
    if not gens:
        return torch.empty((0, *shape), dtype=dtype, device=device)
    return torch.stack([torch.rand(shape, generator=g, dtype=dtype) for g in gens]).to(device)
