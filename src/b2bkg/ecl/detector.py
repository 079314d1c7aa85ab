"""Fixed, versioned ECL detector configuration (the analogue of a conditions-database payload).

What belongs to the *detector* and never to a run: the per-crystal pedestal map, the noise groups
with their electronics-noise level and stationary (Toeplitz) autocovariance, a per-crystal noise
scale, a per-group baseline pattern, the coherent (common-mode) noise of a group, the pulse shape
and the ADC scale. They are built deterministically from :class:`EclDetectorConfig`, whose
``payload_seed`` is a constant of the payload version, never the ``--seed`` of a command: two
samples with different seeds come from the same detector. Change a field (or ``payload_seed``)
to obtain an *altered* detector, e.g. to check that models follow a new pedestal map.

Assumed levels (the real noise level is not public; REFERENCE.md allows 6-20 ADC rms):
  * electronics noise 8-14 ADC rms per sample (0.40-0.70 MeV at 20 ADC/MeV), drawn per noise group
    (12 groups: 2 forward-endcap, 8 barrel, 2 backward-endcap theta bands), times a per-crystal
    factor (log-normal, 6 %); endcap groups sit higher (``endcap_noise_factor``);
  * autocorrelation of a group: a mixture, with payload-drawn weights, of white noise, noise shaped
    by the pulse shaper (the sampled autocorrelation of the pulse) and a slow exponential drift
    (correlation length 4-10 ticks) — every part positive definite, so the Toeplitz matrix is;
  * coherent noise: per event and group one waveform of ``common_mode_rms_adu`` (2 ADC) shared by
    all crystals of the group (what couples the noise of different crystals of one event);
  * pedestal: 3000 ADC + group offset (sd 25) + crystal offset (sd 40), rounded to integers, plus
    a fixed per-group baseline pattern over the 31 samples (a few ADC: a droop and a ripple), which
    gives the mean waveform its structure.

Example:
    >>> det = default_detector()
    >>> det.pedestal_adu.shape, det.cholesky.shape
    ((8736,), (12, 31, 31))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.linalg import toeplitz

from b2bkg.core.config import check_range

from .geometry import N_CRYSTALS, crystal_theta_id
from .pulse import N_SAMPLES, TICK_US, PulseShape

__all__ = ["DETECTOR_VERSION", "EclDetectorConfig", "EclDetector", "build_detector", "default_detector", "noise_groups"]

DETECTOR_VERSION = "b2bkg.ecl.detector/1"

#: first thetaId of each noise group (12 groups): forward 0-5, 6-12; barrel 8 bands; backward 59-63, 64-68
_GROUP_EDGES = np.array([0, 6, 13, 19, 25, 31, 36, 42, 48, 53, 59, 64, 69])
N_GROUPS = len(_GROUP_EDGES) - 1


def noise_groups() -> np.ndarray:
    """Noise group (0..11) of every crystal, shape (8736,), int64 (theta bands)."""
    return np.searchsorted(_GROUP_EDGES, crystal_theta_id(), side="right") - 1


@dataclass(frozen=True)
class EclDetectorConfig:
    """Knobs of the detector payload (defaults = version 1). Not a run setting: no run seed here."""

    payload_seed: int = 20240917
    pedestal_adu: float = 3000.0
    pedestal_group_sd_adu: float = 25.0
    pedestal_crystal_sd_adu: float = 40.0
    baseline_pattern_adu: float = 2.5
    noise_rms_min_adu: float = 8.0
    noise_rms_max_adu: float = 12.0
    endcap_noise_factor: float = 1.15
    crystal_noise_sd: float = 0.06
    common_mode_rms_adu: float = 2.0
    adc_per_mev: float = 20.0
    tick_us: float = TICK_US
    pulse: PulseShape = field(default_factory=PulseShape)

    def __post_init__(self):
        check_range("payload_seed", self.payload_seed, 0, 2**63 - 1)
        check_range("pedestal_adu", self.pedestal_adu, 0.0, 2**18 - 1, "ADC")
        check_range("pedestal_group_sd_adu", self.pedestal_group_sd_adu, 0.0, 1000.0, "ADC")
        check_range("pedestal_crystal_sd_adu", self.pedestal_crystal_sd_adu, 0.0, 1000.0, "ADC")
        check_range("baseline_pattern_adu", self.baseline_pattern_adu, 0.0, 100.0, "ADC")
        check_range("noise_rms_min_adu", self.noise_rms_min_adu, 0.1, 200.0, "ADC")
        check_range("noise_rms_max_adu", self.noise_rms_max_adu, self.noise_rms_min_adu, 200.0, "ADC")
        check_range("endcap_noise_factor", self.endcap_noise_factor, 0.1, 10.0)
        check_range("crystal_noise_sd", self.crystal_noise_sd, 0.0, 1.0)
        check_range("common_mode_rms_adu", self.common_mode_rms_adu, 0.0, 100.0, "ADC")
        check_range("adc_per_mev", self.adc_per_mev, 0.01, 1e4, "ADC/MeV")
        check_range("tick_us", self.tick_us, 0.01, 10.0, "us")


@dataclass(frozen=True, eq=False)
class EclDetector:
    """The built payload.

    Attributes:
        version: payload version string (``DETECTOR_VERSION``).
        config: the :class:`EclDetectorConfig` it was built from.
        pedestal_adu: per-crystal pedestal, shape (8736,), float64, ADC (integer-valued).
        baseline_adu: per-group baseline pattern added to the pedestal, shape (12, 31), ADC.
        group: noise group of each crystal, shape (8736,), int64.
        group_rms_adu: electronics-noise rms of each group, shape (12,), ADC.
        autocov_adu2: Toeplitz autocovariance of each group over lags 0..30, shape (12, 31), ADC^2.
        cholesky: lower Cholesky factor of each group's 31x31 covariance, shape (12, 31, 31), ADC.
        crystal_noise_scale: per-crystal multiplier of the group noise, shape (8736,).
    """

    version: str
    config: EclDetectorConfig
    pedestal_adu: np.ndarray
    baseline_adu: np.ndarray
    group: np.ndarray
    group_rms_adu: np.ndarray
    autocov_adu2: np.ndarray
    cholesky: np.ndarray
    crystal_noise_scale: np.ndarray

    @property
    def pulse(self) -> PulseShape:
        return self.config.pulse

    @property
    def adc_per_mev(self) -> float:
        return self.config.adc_per_mev

    @property
    def tick_us(self) -> float:
        return self.config.tick_us

    @property
    def n_groups(self) -> int:
        return len(self.group_rms_adu)

    def mean_waveform_adu(self) -> np.ndarray:
        """Noise-free, pile-up-free baseline of every crystal, shape (8736, 31), ADC."""
        return self.pedestal_adu[:, None] + self.baseline_adu[self.group]

    def noise_rms_adu(self) -> np.ndarray:
        """Per-crystal electronics-noise rms per sample (incl. coherent part), shape (8736,), ADC."""
        el = self.group_rms_adu[self.group] * self.crystal_noise_scale
        return np.sqrt(el**2 + self.config.common_mode_rms_adu**2)


def _pulse_autocorrelation(pulse: PulseShape, tick_us: float) -> np.ndarray:
    """Normalised autocorrelation, lags 0..30 ticks, of white noise passed through the shaper."""
    dt = 0.01
    t = np.arange(0.0, 40.0, dt)
    h = pulse(t)
    lags = np.arange(N_SAMPLES) * tick_us
    r = np.array([np.sum(h[: len(h) - int(round(l / dt))] * h[int(round(l / dt)) :]) for l in lags])
    return r / r[0]


def build_detector(cfg: EclDetectorConfig | None = None) -> EclDetector:
    """Build the detector payload from ``cfg`` (deterministic: same cfg -> identical arrays)."""
    cfg = cfg or EclDetectorConfig()
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(cfg.payload_seed, spawn_key=(0xEC1,))))
    group = noise_groups()
    g = N_GROUPS
    endcap = np.array([True, True] + [False] * 8 + [True, True])

    # pedestals: integer map around 3000 ADC
    ped = cfg.pedestal_adu + cfg.pedestal_group_sd_adu * rng.standard_normal(g)[group]
    ped = np.rint(ped + cfg.pedestal_crystal_sd_adu * rng.standard_normal(N_CRYSTALS))

    # per-group baseline pattern: a droop plus a damped ripple, amplitude ~ baseline_pattern_adu
    k = np.arange(N_SAMPLES)
    droop = rng.uniform(-1.0, 1.0, g)[:, None] * (k / (N_SAMPLES - 1))[None, :]
    period = rng.uniform(6.0, 14.0, g)[:, None]
    phase = rng.uniform(0, 2 * np.pi, g)[:, None]
    ripple = np.cos(2 * np.pi * k[None, :] / period + phase) * np.exp(-k[None, :] / rng.uniform(10.0, 30.0, g)[:, None])
    baseline = cfg.baseline_pattern_adu * (droop + ripple)
    baseline -= baseline.mean(axis=1, keepdims=True)

    # noise levels and Toeplitz autocovariances
    rms = rng.uniform(cfg.noise_rms_min_adu, cfg.noise_rms_max_adu, g) * np.where(endcap, cfg.endcap_noise_factor, 1.0)
    w = rng.dirichlet([2.0, 4.0, 1.5], size=g)  # white, shaped, slow drift
    length = rng.uniform(4.0, 10.0, g)
    shaped = _pulse_autocorrelation(cfg.pulse, cfg.tick_us)
    rho = w[:, :1] * (k == 0)[None, :] + w[:, 1:2] * shaped[None, :] + w[:, 2:3] * np.exp(-k[None, :] / length[:, None])
    autocov = rms[:, None] ** 2 * rho
    chol = np.stack([np.linalg.cholesky(toeplitz(a)) for a in autocov])  # loop over 12 groups
    scale = np.exp(cfg.crystal_noise_sd * rng.standard_normal(N_CRYSTALS))
    arrays = (ped, baseline, group, rms, autocov, chol, scale)
    for a in arrays:
        a.setflags(write=False)
    return EclDetector(DETECTOR_VERSION, cfg, *arrays)


@lru_cache(maxsize=4)
def _cached(cfg: EclDetectorConfig) -> EclDetector:
    return build_detector(cfg)


def default_detector(cfg: EclDetectorConfig | None = None) -> EclDetector:
    """The (cached) detector payload of ``cfg`` (default: version 1 as shipped)."""
    return _cached(cfg or EclDetectorConfig())
