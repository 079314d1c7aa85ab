"""Deterministic random streams.

One master seed per command is expanded into independent streams, one per *event* and *purpose*
(``domain``), with :class:`numpy.random.SeedSequence`. The stream of event ``i`` depends only on
``(seed, domain, i)``, never on chunk size, shard or worker count, so the same seed always gives
the same dataset.

Example:
    >>> rng = event_rng(1, "pxd.simulate", 5)
    >>> float(rng.random()) == float(event_rng(1, "pxd.simulate", 5).random())
    True
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["domain_key", "event_seed_sequence", "event_rng", "event_rngs", "torch_generator", "stream_rng"]

_MAX_SEED = 2**63 - 1


def _check_seed(seed: int) -> int:
    from .errors import ConfigError

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= _MAX_SEED:
        raise ConfigError(f"seed: {seed!r} is not an integer in 0..2**63-1")
    return int(seed)


def domain_key(domain: str) -> int:
    """Stable 32-bit integer for a stream name (crc32; independent of Python's hash seed)."""
    return zlib.crc32(domain.encode("utf-8"))


def event_seed_sequence(seed: int, domain: str, event: int) -> np.random.SeedSequence:
    """SeedSequence of event ``event`` for the purpose ``domain`` under master seed ``seed``."""
    return np.random.SeedSequence(entropy=_check_seed(seed), spawn_key=(domain_key(domain), int(event)))


def event_rng(seed: int, domain: str, event: int) -> np.random.Generator:
    """numpy Generator (PCG64) of one event."""
    return np.random.Generator(np.random.PCG64(event_seed_sequence(seed, domain, event)))


def event_rngs(seed: int, domain: str, start: int, stop: int) -> list[np.random.Generator]:
    """Generators for events ``start..stop-1``."""
    return [event_rng(seed, domain, i) for i in range(start, stop)]


def stream_rng(seed: int, domain: str) -> np.random.Generator:
    """A single (non per-event) stream, e.g. for shuffling a training set."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(_check_seed(seed), spawn_key=(domain_key(domain),))))


def torch_generator(seed: int, domain: str, event: int = 0, device: str = "cpu"):
    """torch.Generator seeded from the (seed, domain, event) stream."""
    import torch

    s = int(event_seed_sequence(seed, domain, event).generate_state(1, dtype=np.uint64)[0] & 0x7FFF_FFFF_FFFF_FFFF)
    g = torch.Generator(device=device)
    g.manual_seed(s)
    return g
