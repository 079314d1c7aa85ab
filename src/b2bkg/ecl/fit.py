"""Template fit of ECL waveforms: amplitude, time and pedestal, vectorized over crystals.

For every waveform ``S`` (31 samples) and every hit time ``t_j`` of a grid, the model
``S = a T_j + b`` (``T_j`` the unit-peak pulse template of :mod:`b2bkg.ecl.pulse` sampled at the
31 ticks, ``b`` a free pedestal) is solved by linear least squares in closed form::

    a_j = <S, T_j - mean T_j> / |T_j - mean T_j|^2,     b_j = mean S - a_j mean T_j,
    chi2_j = |S - mean S|^2 - a_j^2 |T_j - mean T_j|^2

and the time with the smallest chi2 among positive amplitudes is kept (one matrix product
``S @ T^T`` for all crystals and times). The grid spans peak positions ``peak_range_ticks`` in
steps of ``step_ticks`` (0.1 tick = 57 ns: the amplitude error from the grid is < 0.1 %).
Chi2 is in ADC^2 (unweighted; divide by the noise variance for a normalised value).

Example:
    >>> from b2bkg.ecl.pulse import PulseShape
    >>> p = PulseShape()
    >>> s = 3000 + 200 * p.template(5.0)[0]
    >>> r = fit_waveforms(s[None])
    >>> round(float(r.amplitude_adu[0])), round(float(r.pedestal_adu[0]))
    (200, 3000)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from b2bkg.core.errors import ConfigError

from .pulse import N_SAMPLES, TICK_US, PulseShape

__all__ = ["FitResult", "fit_waveforms", "fit_energies"]


@dataclass
class FitResult:
    """Fit results, each of the input's leading shape (e.g. (n_events, 8736)).

    Attributes:
        amplitude_adu: pulse peak amplitude above the pedestal, ADC (>= 0).
        peak_time_us: time of the pulse maximum in the window (sample 0 at t = 0), us.
        pedestal_adu: fitted constant pedestal, ADC.
        chi2_adu2: sum of squared residuals, ADC^2.
    """

    amplitude_adu: np.ndarray
    peak_time_us: np.ndarray
    pedestal_adu: np.ndarray
    chi2_adu2: np.ndarray


@lru_cache(maxsize=8)
def _templates(pulse: PulseShape, tick_us: float, lo: float, hi: float, step: float):
    peaks = np.arange(lo, hi + 0.5 * step, step) * tick_us  # peak times, us
    t = pulse.template(peaks - pulse.peak_time_us, N_SAMPLES, tick_us)  # (J, 31)
    tc = t - t.mean(axis=1, keepdims=True)
    nn = (tc**2).sum(axis=1)
    return peaks, t.mean(axis=1), tc.astype(np.float32), nn


def fit_waveforms(
    waveforms: np.ndarray,
    *,
    pulse: PulseShape | None = None,
    tick_us: float = TICK_US,
    peak_range_ticks: tuple[float, float] = (2.0, 28.0),
    step_ticks: float = 0.1,
    chunk: int = 4096,
) -> FitResult:
    """Fit amplitude, time and pedestal of every waveform.

    Args:
        waveforms: ADC counts, shape (..., 31), any int or float dtype.
        pulse: the pulse shape (default :class:`PulseShape`).
        peak_range_ticks: range of the pulse maximum searched, in samples.
        step_ticks: grid step of the time search, in samples.
        chunk: waveforms per matrix product (memory: chunk x n_times floats).
    Returns:
        :class:`FitResult` with arrays of shape ``waveforms.shape[:-1]``.
    """
    w = np.asarray(waveforms)
    if w.ndim < 1 or w.shape[-1] != N_SAMPLES:
        raise ConfigError(f"waveforms: shape {w.shape} does not end in {N_SAMPLES} samples")
    lo, hi = peak_range_ticks
    if not (0 <= lo < hi <= N_SAMPLES - 1) or not (0 < step_ticks <= hi - lo):
        raise ConfigError(f"peak_range_ticks={peak_range_ticks}, step_ticks={step_ticks}: need 0 <= lo < hi <= 30, 0 < step <= hi - lo")
    peaks, tmean, tc, nn = _templates(pulse or PulseShape(), float(tick_us), float(lo), float(hi), float(step_ticks))
    flat = w.reshape(-1, N_SAMPLES)
    n = len(flat)
    amp = np.empty(n)
    tpk = np.empty(n)
    ped = np.empty(n)
    chi2 = np.empty(n)
    for a in range(0, n, chunk):  # chunks of waveforms, not a loop over crystals
        s = flat[a : a + chunk].astype(np.float64)
        smean = s.mean(axis=1)
        sc = (s - smean[:, None]).astype(np.float32)
        proj = sc @ tc.T  # (c, J)
        score = np.where(proj > 0, proj.astype(np.float64) ** 2 / nn, 0.0)
        j = np.argmax(score, axis=1)
        rows = np.arange(len(s))
        aj = np.maximum(proj[rows, j] / nn[j], 0.0)
        amp[a : a + chunk] = aj
        tpk[a : a + chunk] = peaks[j]
        ped[a : a + chunk] = smean - aj * tmean[j]
        chi2[a : a + chunk] = ((s - smean[:, None]) ** 2).sum(axis=1) - score[rows, j]
    shape = w.shape[:-1]
    return FitResult(amp.reshape(shape), tpk.reshape(shape), ped.reshape(shape), np.maximum(chi2, 0).reshape(shape))


def fit_energies(waveforms: np.ndarray, *, adc_per_mev: float = 20.0, pulse: PulseShape | None = None) -> np.ndarray:
    """Deposited energy of every waveform from the template fit, MeV, shape ``waveforms.shape[:-1]``."""
    return fit_waveforms(waveforms, pulse=pulse).amplitude_adu / adc_per_mev
