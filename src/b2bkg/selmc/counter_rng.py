"""Counter-based random numbers for vectorized, chunk-independent event generation.

Generating thousands of events at once means the draws of one event must not depend on which
other events share its chunk. Each event gets a 64-bit key from its own numpy stream
(:func:`b2bkg.core.seeding.event_rng`); every random number is then a hash of
``(key, particle index within the event, purpose, slot, attempt...)`` through the splitmix64
finalizer (Steele, Lea & Flood 2014), so draws are a pure function of *what* is drawn for *which*
particle of *which* event, evaluated elementwise over arbitrary arrays.

Example:
    >>> import numpy as np
    >>> k = event_keys(1, "smc.generate", 0, 3)
    >>> u = uniform(k[:, None], np.arange(4)[None, :], 7)
    >>> u.shape, bool(((u > 0) & (u < 1)).all())
    ((3, 4), True)
"""

from __future__ import annotations

import numpy as np

from b2bkg.core.seeding import event_rng

__all__ = ["event_keys", "derive_keys", "mix64", "uniform", "normal", "exponential", "choice_cum"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def event_keys(seed: int, domain: str, start: int, stop: int, n_keys: int = 1) -> np.ndarray:
    """64-bit keys of events ``start..stop-1`` drawn from their own ``event_rng(seed, domain, i)``.

    Returns shape (stop-start,) uint64 for ``n_keys == 1`` else (stop-start, n_keys).
    """
    keys = np.empty((stop - start, n_keys), np.uint64)
    for j, i in enumerate(range(start, stop)):
        keys[j] = event_rng(seed, domain, i).bit_generator.random_raw(n_keys)
    return keys[:, 0] if n_keys == 1 else keys


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, np.uint64) + _GOLDEN
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        return z ^ (z >> _S31)


def _hash(key, counters) -> np.ndarray:
    h = np.asarray(key, np.uint64)
    with np.errstate(over="ignore"):
        for i, c in enumerate(counters):
            c = np.asarray(c).astype(np.int64).astype(np.uint64)
            h = mix64(h ^ (c * _M1 + np.uint64(0x632BE59BD9B4E019 + 0x1000193 * i)))
    return h


def derive_keys(key, *counters) -> np.ndarray:
    """New 64-bit keys from a key and integer counters (e.g. an independent stream per repeat)."""
    return _hash(key, counters)


def uniform(key, *counters) -> np.ndarray:
    """Uniform float64 in the open interval (0, 1), broadcast over ``key`` and the counters."""
    h = _hash(key, counters)
    return ((h >> _S11).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def normal(key, *counters) -> np.ndarray:
    """Standard normal variates (Box-Muller on two hashed uniforms)."""
    u1 = uniform(key, *counters, 0x51)
    u2 = uniform(key, *counters, 0x52)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def exponential(key, *counters) -> np.ndarray:
    """Unit-mean exponential variates."""
    return -np.log(uniform(key, *counters))


def choice_cum(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index drawn from cumulative weights ``cum`` (shape (..., K), last column the total) with ``u``."""
    return np.minimum((u[..., None] * cum[..., -1:] >= cum).sum(-1), cum.shape[-1] - 1)
