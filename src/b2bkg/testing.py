"""Helpers for tests and notebooks: small random containers in the real schemas."""

from __future__ import annotations

import numpy as np

from b2bkg.io import PxdDigits, SmcEvents
from b2bkg.io.events import SMC_PARTICLE_FIELDS


def random_pxd(rng: np.random.Generator, n_events: int = 4, max_hits: int = 50) -> PxdDigits:
    counts = rng.integers(0, max_hits, n_events)
    if n_events:
        counts[0] = 0  # always one empty event
    n = int(counts.sum())
    return PxdDigits(
        np.concatenate([[0], np.cumsum(counts)]),
        rng.integers(0, 40, n), rng.integers(0, 250, n), rng.integers(0, 768, n), rng.integers(1, 256, n),
    )


def random_smc(rng: np.random.Generator, n_events: int = 3) -> SmcEvents:
    counts = rng.integers(0, 6, n_events)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    n = int(offsets[-1])
    parts = {k: rng.normal(size=n).astype(np.float32) for k in SMC_PARTICLE_FIELDS}
    parts["pdg"] = rng.choice([211, -211, 22, 321, 11], n).astype(np.int32)
    parts["mother"] = np.full(n, -1, np.int32)
    per = {
        "event_id": np.arange(n_events),
        "passed_fei_b0": rng.random(n_events) < 0.5,
        "mbc_fei_b0": np.where(rng.random(n_events) < 0.5, np.nan, 5.27).astype(np.float32),
    }
    return SmcEvents(offsets, parts, per)
