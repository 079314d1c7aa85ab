"""Fixed, versioned PXD detector configuration (the analogue of a conditions-database payload).

What belongs to the *detector* and never to a run: the pixel pedestals (which set the per-pixel
ADC ceiling, because the 8-bit ADC clips at 255 before the pedestal is subtracted), the dead
pixels (whole dead drain lines = columns of constant u, dead gate rows, and scattered single dead
pixels) and the hot pixels. Everything is built deterministically from :class:`PxdDetectorConfig`,
whose ``payload_seed`` is a constant of the payload version, never the ``--seed`` of a command:
two samples with different seeds come from the same detector. Change a field (or
``payload_seed``) to obtain an altered detector.

Levels [assume, from REFERENCE.md]: pedestal ~ N(100, 30) ADU per pixel (rounded, clipped to
20..220); 1 dead drain line per 4 sensors on average, 1 dead gate row per 10 sensors, 2e-4 of the
pixels dead at random; 2e-6 of the pixels hot (fire in 90 % of the frames with ~N(40, 10) ADU).

Example:
    >>> det = default_detector()
    >>> det.pedestal_adu.shape, det.dead.dtype
    ((7680000,), dtype('bool'))
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from b2bkg.core.config import check_range

from .geometry import N_SENSORS, N_UCELLS, N_VCELLS

__all__ = ["DETECTOR_VERSION", "PxdDetectorConfig", "PxdDetector", "build_detector", "default_detector", "pixel_key"]

DETECTOR_VERSION = "b2bkg.pxd.detector/1"
N_ALL_PIXELS = N_SENSORS * N_UCELLS * N_VCELLS


def pixel_key(sensor, ucell, vcell) -> np.ndarray:
    """Flat pixel index ``(sensor * 768 + vcell) * 250 + ucell`` (int64); sorting by it sorts by
    (sensor, vcell, ucell)."""
    return (np.asarray(sensor, np.int64) * N_VCELLS + np.asarray(vcell, np.int64)) * N_UCELLS + np.asarray(ucell, np.int64)


@dataclass(frozen=True)
class PxdDetectorConfig:
    """Knobs of the PXD detector payload (defaults = version 1). No run seed here."""

    payload_seed: int = 20240601
    pedestal_mean_adu: float = 100.0
    pedestal_sigma_adu: float = 30.0
    dead_columns_per_sensor: float = 0.25
    dead_rows_per_sensor: float = 0.1
    dead_pixel_fraction: float = 2e-4
    hot_pixel_fraction: float = 2e-6
    hot_fire_probability: float = 0.9
    hot_charge_adu: float = 40.0

    def __post_init__(self):
        check_range("payload_seed", self.payload_seed, 0, 2**63 - 1)
        check_range("pedestal_mean_adu", self.pedestal_mean_adu, 0.0, 255.0, "ADU")
        check_range("pedestal_sigma_adu", self.pedestal_sigma_adu, 0.0, 100.0, "ADU")
        check_range("dead_columns_per_sensor", self.dead_columns_per_sensor, 0.0, 250.0)
        check_range("dead_rows_per_sensor", self.dead_rows_per_sensor, 0.0, 768.0)
        check_range("dead_pixel_fraction", self.dead_pixel_fraction, 0.0, 1.0)
        check_range("hot_pixel_fraction", self.hot_pixel_fraction, 0.0, 0.01)
        check_range("hot_fire_probability", self.hot_fire_probability, 0.0, 1.0)
        check_range("hot_charge_adu", self.hot_charge_adu, 0.0, 255.0, "ADU")


@dataclass(frozen=True)
class PxdDetector:
    """The built payload.

    Attributes (``P = 40 * 768 * 250`` pixels, flat index :func:`pixel_key`):
        config: the config it was built from.
        version: payload version string (recorded in output files).
        pedestal_adu: pixel pedestals, shape (P,), uint8, ADU.
        dead: dead-pixel mask, shape (P,), bool.
        hot_keys: flat indices of the hot pixels, shape (n_hot,), int64, sorted.
    """

    config: PxdDetectorConfig
    version: str
    pedestal_adu: np.ndarray
    dead: np.ndarray
    hot_keys: np.ndarray

    def __hash__(self):  # identity: one payload object per config (cached)
        return id(self)

    def __eq__(self, other):
        return self is other


def build_detector(config: PxdDetectorConfig | None = None) -> PxdDetector:
    """Build the payload from its config (deterministic; ~0.2 s)."""
    cfg = config or PxdDetectorConfig()
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(cfg.payload_seed, spawn_key=(0x9D0,))))
    ped = np.clip(np.rint(cfg.pedestal_mean_adu + cfg.pedestal_sigma_adu * rng.standard_normal(N_ALL_PIXELS)), 20, 220)
    dead = rng.random(N_ALL_PIXELS) < cfg.dead_pixel_fraction
    img = dead.reshape(N_SENSORS, N_VCELLS, N_UCELLS)
    for s in range(N_SENSORS):  # 40 iterations: a handful of lines per sensor
        for u in rng.integers(0, N_UCELLS, rng.poisson(cfg.dead_columns_per_sensor)):
            img[s, :, u] = True
        for v in rng.integers(0, N_VCELLS, rng.poisson(cfg.dead_rows_per_sensor)):
            img[s, v, :] = True
    n_hot = rng.poisson(cfg.hot_pixel_fraction * N_ALL_PIXELS)
    hot = np.unique(rng.integers(0, N_ALL_PIXELS, n_hot))
    hot = hot[~dead[hot]]
    for a in (ped, dead, hot):
        a.setflags(write=False)
    ped = ped.astype(np.uint8)
    ped.setflags(write=False)
    return PxdDetector(cfg, DETECTOR_VERSION, ped, dead, hot)


@lru_cache(maxsize=4)
def default_detector(config: PxdDetectorConfig | None = None) -> PxdDetector:
    """The payload of ``config`` (default: version 1), built once per process."""
    return build_detector(config)
