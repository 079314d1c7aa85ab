"""ECL truth background simulator: 31-sample random-trigger waveforms of all 8736 crystals.

Per event and crystal the waveform (ADC counts, int32, clipped to the 18-bit range) is::

    pedestal (fixed map) + group baseline pattern
    + correlated electronics noise  (x = L z, L the Cholesky factor of the group's Toeplitz
                                     autocovariance, times a per-crystal scale)
    + coherent noise of the group   (one waveform per event and group, shared by its crystals)
    + pile-up of background photons (shaped pulses, Poisson in number, uniform in time over the
                                     window and ``pre_window_us`` before it, energies from a
                                     power law E^-index between energy_min_mev and energy_max_mev)
    + energetic depositions         (a few per event above 10 MeV, shared over the 5x5 window of
                                     a seed crystal with a lateral profile; the selection's target)

Detector constants (pedestals, noise, pulse shape, 20 ADC/MeV) come from
:mod:`b2bkg.ecl.detector`, never from the run seed. Background photon rates are largest in the
forward endcap, rise in the backward endcap and are lowest in the barrel; they are split into a
luminosity part (radiative Bhabha, two-photon) and HER / LER single-beam parts (beam-gas ~
current x pressure, Touschek ~ current^2), the HER part forward-weighted, the LER part backward-
weighted, and scaled per event by the beam conditions of :mod:`b2bkg.core.conditions` (x
``injection_boost`` in injection events). The conditions of event ``i`` are drawn from the stream
``event_rng(seed, "conditions", i)`` (shared with the PXD simulator, so that the same seed gives
the same conditions in both), everything else from ``event_rng(seed, "ecl.simulate", i)``.

The result is non-Gaussian (pulses of a steep energy spectrum), theta-dependent (rates) and
event-correlated (conditions and coherent noise move every crystal of an event): a per-crystal
covariance matrix cannot reproduce it.

Example:
    >>> wf, cond = next(iter_ecl_chunks(1, seed=1))
    >>> wf.waveforms.shape, cond.names[0]
    ((1, 8736, 31), 'lumi')
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from b2bkg.core.conditions import CONDITION_NAMES, ConditionsConfig, ConditionsSource, resolve_conditions
from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError
from b2bkg.core.progress import progress
from b2bkg.core.seeding import event_rng
from b2bkg.io.events import ADC_MAX_ECL, Conditions, EclWaveforms

from .detector import EclDetector, EclDetectorConfig, default_detector
from .geometry import N_CRYSTALS, RING_THETA_DEG, crystal_phi, crystal_theta, crystal_theta_id, neighbour_table
from .pulse import N_SAMPLES

__all__ = ["EclSimConfig", "iter_ecl_chunks", "simulate_ecl", "simulate_event", "photon_rates", "ECL_DOMAIN", "CONDITIONS_DOMAIN"]

ECL_DOMAIN = "ecl.simulate"
CONDITIONS_DOMAIN = "conditions"
_LUT_STEP_US = 0.001


@dataclass(frozen=True)
class EclSimConfig:
    """Background model of the ECL truth simulator (the run side; the detector is ``detector``).

    Rates are background photons above ``energy_min_mev`` per crystal and us at nominal
    conditions: ``barrel_rate_per_us`` in the barrel, rising exponentially (in theta, scale
    ``endcap_falloff_deg``) to ``forward_rate_per_us`` / ``backward_rate_per_us`` at the innermost
    endcap rings.
    """

    barrel_rate_per_us: float = 0.03
    forward_rate_per_us: float = 0.6
    backward_rate_per_us: float = 0.3
    endcap_falloff_deg: float = 6.0
    lumi_fraction: float = 0.5
    injection_boost: float = 3.0
    energy_min_mev: float = 0.1
    energy_max_mev: float = 30.0
    spectrum_index: float = 2.6
    pre_window_us: float = 10.0
    clusters_per_event: float = 2.0
    cluster_energy_min_mev: float = 10.0
    cluster_energy_max_mev: float = 500.0
    cluster_spectrum_index: float = 2.0
    cluster_moliere_rad: float = 0.03
    detector: EclDetectorConfig = field(default_factory=EclDetectorConfig)

    def __post_init__(self):
        for name in ("barrel_rate_per_us", "forward_rate_per_us", "backward_rate_per_us"):
            check_range(name, getattr(self, name), 0.0, 100.0, "1/us")
        check_range("endcap_falloff_deg", self.endcap_falloff_deg, 0.1, 180.0, "deg")
        check_range("lumi_fraction", self.lumi_fraction, 0.0, 1.0)
        check_range("injection_boost", self.injection_boost, 0.0, 100.0)
        check_range("energy_min_mev", self.energy_min_mev, 1e-3, 1e3, "MeV")
        check_range("energy_max_mev", self.energy_max_mev, self.energy_min_mev, 1e4, "MeV")
        check_range("spectrum_index", self.spectrum_index, 1.01, 10.0)
        check_range("pre_window_us", self.pre_window_us, 0.0, 40.0, "us")
        check_range("clusters_per_event", self.clusters_per_event, 0.0, 1000.0)
        check_range("cluster_energy_min_mev", self.cluster_energy_min_mev, 0.1, 1e4, "MeV")
        check_range("cluster_energy_max_mev", self.cluster_energy_max_mev, self.cluster_energy_min_mev, 1.3e4, "MeV")
        check_range("cluster_spectrum_index", self.cluster_spectrum_index, 1.01, 10.0)
        check_range("cluster_moliere_rad", self.cluster_moliere_rad, 1e-4, 1.0, "rad")


# ---------------------------------------------------------------------------------------------
# precomputed tables
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Tables:
    det: EclDetector
    profile: np.ndarray  # (8736,) nominal rate, 1/us
    w_forward: np.ndarray  # (8736,) HER share of the single-beam part
    lut: np.ndarray  # pulse look-up table, step _LUT_STEP_US
    sample_t: np.ndarray  # (31,) sample times, us
    group_ranges: tuple  # per group: (first, stop) crystal index (groups are contiguous)
    chol_t: np.ndarray  # (G, 31, 31) float32, transposed Cholesky factors
    common_mode: np.ndarray  # (G,) coherent-noise rms / group rms
    noise_scale: np.ndarray  # (8736, 1) float32
    baseline: np.ndarray  # (8736, 31) float64 pedestal + group pattern
    nb5: np.ndarray  # (8736, K5) 5x5 neighbour table
    unit: np.ndarray  # (8736, 3) crystal direction


@lru_cache(maxsize=4)
def _tables(cfg: EclSimConfig) -> _Tables:
    det = default_detector(cfg.detector)
    th = RING_THETA_DEG[crystal_theta_id()]
    lo, hi = RING_THETA_DEG[0], RING_THETA_DEG[-1]
    b = cfg.barrel_rate_per_us
    profile = (
        b
        + max(cfg.forward_rate_per_us - b, 0.0) * np.exp(-(th - lo) / cfg.endcap_falloff_deg)
        + max(cfg.backward_rate_per_us - b, 0.0) * np.exp(-(hi - th) / cfg.endcap_falloff_deg)
    )
    theta, phi = crystal_theta(), crystal_phi()
    unit = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)
    ranges = []
    for g in range(det.n_groups):
        idx = np.flatnonzero(det.group == g)
        if not np.array_equal(idx, np.arange(idx[0], idx[-1] + 1)):
            raise ConfigError(f"noise group {g} is not a contiguous range of crystals")
        ranges.append((int(idx[0]), int(idx[-1]) + 1))
    return _Tables(
        det=det,
        profile=profile,
        w_forward=0.5 * (1.0 + np.cos(theta)),
        lut=det.pulse.table(_LUT_STEP_US, 40.0),
        sample_t=np.arange(N_SAMPLES) * det.tick_us,
        group_ranges=tuple(ranges),
        chol_t=np.ascontiguousarray(np.transpose(det.cholesky, (0, 2, 1))).astype(np.float32),
        common_mode=(det.config.common_mode_rms_adu / det.group_rms_adu).astype(np.float32),
        noise_scale=det.crystal_noise_scale[:, None].astype(np.float32),
        baseline=det.mean_waveform_adu(),
        nb5=neighbour_table(5),
        unit=unit,
    )


def photon_rates(conditions: np.ndarray, config: EclSimConfig | None = None) -> np.ndarray:
    """Background photon rate of every crystal for one event's conditions.

    Args:
        conditions: shape (6,), in the order of ``CONDITION_NAMES`` (scale factors vs nominal).
    Returns:
        shape (8736,), photons above ``energy_min_mev`` per us, float64.
    """
    cfg = config or EclSimConfig()
    tb = _tables(cfg)
    lumi, her, ler, her_vac, ler_vac, inj = (float(x) for x in conditions)
    her_scale = 0.5 * her * her_vac + 0.5 * her**2  # beam-gas + Touschek
    ler_scale = 0.5 * ler * ler_vac + 0.5 * ler**2
    f = cfg.lumi_fraction
    mix = f * lumi + (1 - f) * (tb.w_forward * her_scale + (1 - tb.w_forward) * ler_scale)
    return tb.profile * mix * (1.0 + cfg.injection_boost * inj)


def _power_law(rng: np.random.Generator, n: int, e_min: float, e_max: float, index: float) -> np.ndarray:
    """``n`` draws from dN/dE ~ E^-index on [e_min, e_max] (inverse CDF), MeV."""
    a = 1.0 - index
    u = rng.random(n)
    return (e_min**a + u * (e_max**a - e_min**a)) ** (1.0 / a)


def simulate_event(rng: np.random.Generator, conditions: np.ndarray, config: EclSimConfig | None = None) -> np.ndarray:
    """One event's waveforms.

    Args:
        rng: the event's generator (``event_rng(seed, "ecl.simulate", i)``).
        conditions: shape (6,), order of ``CONDITION_NAMES``.
    Returns:
        ADC counts, shape (8736, 31), int32, in [0, 2^18 - 1].
    """
    cfg = config or EclSimConfig()
    tb = _tables(cfg)
    det = tb.det
    n_s = N_SAMPLES

    # correlated electronics noise (per group x = z L^T) + coherent group noise. Groups are theta
    # bands, hence contiguous ranges of crystals.
    z = rng.standard_normal((N_CRYSTALS, n_s), dtype=np.float32)
    zc = rng.standard_normal((det.n_groups, n_s)).astype(np.float32)
    noise = np.empty((N_CRYSTALS, n_s), dtype=np.float32)
    for g, (a, b) in enumerate(tb.group_ranges):  # 12 groups
        lt = tb.chol_t[g]  # (31, 31) = L^T, float32
        np.matmul(z[a:b], lt, out=noise[a:b])
        noise[a:b] += (tb.common_mode[g] * zc[g]) @ lt
    noise *= tb.noise_scale
    wave = tb.baseline + noise  # float64 (8736, 31)

    # pile-up photons: Poisson count per crystal over [-pre_window, window end)
    t_lo = -cfg.pre_window_us
    t_hi = n_s * det.tick_us
    rates = photon_rates(conditions, cfg)
    counts = rng.poisson(rates * (t_hi - t_lo))
    crys = np.repeat(np.arange(N_CRYSTALS), counts)
    m = len(crys)
    t_hit = rng.uniform(t_lo, t_hi, m)
    amp = det.adc_per_mev * _power_law(rng, m, cfg.energy_min_mev, cfg.energy_max_mev, cfg.spectrum_index)
    if m:
        k = np.rint((tb.sample_t[None, :] - t_hit[:, None]) * (1.0 / _LUT_STEP_US)).astype(np.int64)  # (m, 31)
        np.clip(k, 0, len(tb.lut) - 1, out=k)  # before the deposit: lut[0] = 0
        contrib = tb.lut[k] * amp[:, None].astype(np.float32)
        flat = (crys[:, None] * n_s + np.arange(n_s)[None, :]).ravel()
        wave += np.bincount(flat, weights=contrib.ravel(), minlength=N_CRYSTALS * n_s).reshape(N_CRYSTALS, n_s)

    # energetic depositions spread over the 5x5 window of a seed crystal
    scale = float(rates.mean() / tb.profile.mean())
    n_clu = rng.poisson(cfg.clusters_per_event * scale)
    if n_clu:
        seeds = rng.choice(N_CRYSTALS, size=n_clu, p=rates / rates.sum())
        e0 = _power_law(rng, n_clu, cfg.cluster_energy_min_mev, cfg.cluster_energy_max_mev, cfg.cluster_spectrum_index)
        peak_lo, peak_hi = 6 * det.tick_us, 24 * det.tick_us
        t0 = rng.uniform(peak_lo, peak_hi, n_clu) - det.pulse.peak_time_us
        nb = tb.nb5[seeds]  # (n_clu, K) 0-based crystal indices, -1 padded
        valid = nb >= 0
        nbc = np.where(valid, nb, seeds[:, None])
        is_seed = valid & (nbc == seeds[:, None])
        cosang = np.clip(np.einsum("ckx,cx->ck", tb.unit[nbc], tb.unit[seeds]), -1.0, 1.0)
        w = np.exp(-np.arccos(cosang) / cfg.cluster_moliere_rad) * rng.gamma(4.0, 0.25, nb.shape)
        w *= valid & ~is_seed
        f_seed = rng.uniform(0.55, 0.85, n_clu)  # fraction of the energy in the seed crystal
        w *= ((1.0 - f_seed) / np.maximum(w.sum(axis=1), 1e-12))[:, None]
        e = w * e0[:, None]  # (n_clu, K) MeV
        e[is_seed] = np.broadcast_to((f_seed * e0)[:, None], e.shape)[is_seed]
        sel = valid & (e > 0)
        cr, tt, ee = nbc[sel], np.broadcast_to(t0[:, None], nb.shape)[sel], e[sel]
        tt = tt + 0.02 * rng.standard_normal(len(tt))  # small time jitter between crystals (us)
        pulses = det.pulse(tb.sample_t[None, :] - tt[:, None]) * (det.adc_per_mev * ee)[:, None]
        np.add.at(wave, cr, pulses)  # few hundred rows

    np.rint(wave, out=wave)
    np.clip(wave, 0, ADC_MAX_ECL, out=wave)
    return wave.astype(np.int32)


def _source(conditions) -> ConditionsSource:
    if isinstance(conditions, ConditionsSource):
        return conditions
    return resolve_conditions(conditions)


def iter_ecl_chunks(
    n_events: int,
    seed: int,
    *,
    conditions: str | Path | ConditionsConfig | ConditionsSource | None = None,
    config: EclSimConfig | None = None,
    chunk_size: int = 20,
    start: int = 0,
) -> Iterator[tuple[EclWaveforms, Conditions]]:
    """Simulate events ``start .. start + n_events - 1`` in chunks.

    Each event draws from its own streams, so the arrays do not depend on ``chunk_size`` or
    ``start`` (event ``i`` is the same whichever chunk holds it).

    Args:
        conditions: None (nominal :class:`ConditionsConfig`), a YAML path, a data file whose
            ``conditions`` group is reused event by event, a ConditionsConfig or a ConditionsSource.
    Yields:
        (EclWaveforms with waveforms (c, 8736, 31) int32 ADC, Conditions (c, 6) float32).
    """
    for name, v, lo in (("n_events", n_events, 0), ("chunk_size", chunk_size, 1), ("start", start, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ConfigError(f"{name}: {v!r} is not an integer >= {lo}")
    cfg = config or EclSimConfig()
    src = _source(conditions)
    for c0 in range(start, start + n_events, chunk_size):
        c1 = min(c0 + chunk_size, start + n_events)
        out = np.empty((c1 - c0, N_CRYSTALS, N_SAMPLES), dtype=np.int32)
        cond = np.empty((c1 - c0, len(CONDITION_NAMES)), dtype=np.float32)
        for j, i in enumerate(range(c0, c1)):
            # float32 first: re-simulating with the conditions read back from a file is identical
            cond[j] = src.get(i, event_rng(seed, CONDITIONS_DOMAIN, i)).astype(np.float32)
            out[j] = simulate_event(event_rng(seed, ECL_DOMAIN, i), cond[j].astype(np.float64), cfg)
        yield EclWaveforms(out), Conditions(cond, CONDITION_NAMES)


def simulate_ecl(
    n_events: int,
    seed: int,
    out: str | Path,
    *,
    conditions=None,
    config: EclSimConfig | None = None,
    chunk_size: int = 20,
    command: str = "",
) -> Path:
    """Simulate ``n_events`` truth events into ``out`` (``.h5`` / ``.root``; ecl + conditions groups).

    Written atomically (temporary name, renamed when complete), with a progress bar. The file
    attributes record the detector payload version and the background config.
    Returns the output path.
    """
    from b2bkg.core.config import to_dict
    from b2bkg.io import FileWriter

    cfg = config or EclSimConfig()
    out = Path(out)
    from b2bkg.core.provenance import simulator_hash

    attrs = {"ecl_detector": default_detector(cfg.detector).version, "ecl_sim_config": to_dict(cfg),
             "simulator_hash": simulator_hash("ecl", to_dict(cfg))}
    with FileWriter(out, seed=seed, command=command, attrs=attrs) as w:
        bar = progress(total=n_events, desc="simulate ecl", unit="event")
        try:
            for wf, cond in iter_ecl_chunks(n_events, seed, conditions=conditions, config=cfg, chunk_size=chunk_size):
                w.append(ecl=wf, conditions=cond)
                bar.update(wf.n_events)
        finally:
            bar.close()
    return out
