"""ECL signal pulse shape: a CR-(RC)^n-like shaper response with a small undershoot.

Own parametrisation, tuned to the published facts of the Belle II ShaperDSP template (see
shared/REFERENCE.md): the pulse of a deposit at time ``t_hit`` starts ``offset_us`` (0.5 us) later,
peaks 2.55 us after that start, has a FWHM of 1.89 us, falls to 0.80 / 0.45 / 0.20 / 0.03 of the
peak 1 / 2 / 3 / 5 ticks (0.566 us) after it, and undershoots by about -0.6 % of the peak.

Shape, with ``x = (t - t_hit - offset_us) / tau_us`` and ``y = (t - t_hit - offset_us -
undershoot_delay_us) / undershoot_tau_us``::

    s(t) = c * [ (x / n)^n exp(n - x)  -  u (y / 2)^2 exp(2 - y) ]      (zero before the start)

The first term is the unipolar CR-(RC)^n response (n integrating stages of time constant tau,
peak at ``x = n``), the second a slow negative lobe (the AC coupling of the chain) whose weight
``u`` is solved so that the minimum of ``s`` is ``-undershoot_fraction``; ``c`` scales the peak to 1.
With n = 10 and tau = 0.255 us the shape gives peak 2.55 us after the start, FWHM 1.90 us and
0.806 / 0.464 / 0.210 / 0.026 of the peak 1 / 2 / 3 / 5 ticks later.

Example:
    >>> p = PulseShape()
    >>> round(float(p(p.peak_time_us)), 3)
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from b2bkg.core.config import check_range

__all__ = ["PulseShape", "TICK_US", "N_SAMPLES"]

TICK_US = 0.566  #: ADC sampling period, us (31 samples = 17.5 us)
N_SAMPLES = 31


@dataclass(frozen=True)
class PulseShape:
    """Normalised (peak = 1) ECL pulse as a function of the time since the deposit, in us."""

    n_stages: int = 10
    tau_us: float = 0.255
    offset_us: float = 0.5
    undershoot_fraction: float = 0.006
    undershoot_delay_us: float = 2.55
    undershoot_tau_us: float = 2.4

    def __post_init__(self):
        check_range("n_stages", self.n_stages, 1, 30)
        check_range("tau_us", self.tau_us, 0.01, 5.0, "us")
        check_range("offset_us", self.offset_us, 0.0, 5.0, "us")
        check_range("undershoot_fraction", self.undershoot_fraction, 0.0, 0.2)
        check_range("undershoot_delay_us", self.undershoot_delay_us, 0.0, 20.0, "us")
        check_range("undershoot_tau_us", self.undershoot_tau_us, 0.05, 50.0, "us")

    # -- raw terms -------------------------------------------------------------------------
    def _main(self, dt: np.ndarray) -> np.ndarray:
        n = self.n_stages
        x = np.maximum(dt, 0.0) / self.tau_us
        return np.where(dt > 0, np.exp(n * np.log(np.maximum(x, 1e-300) / n) + n - x), 0.0)

    def _lobe(self, dt: np.ndarray) -> np.ndarray:
        y = np.maximum(dt - self.undershoot_delay_us, 0.0) / self.undershoot_tau_us
        return (y / 2.0) ** 2 * np.exp(2.0 - y)

    @cached_property
    def _norm(self) -> tuple[float, float, float]:
        """(u, c, t_peak): lobe weight, peak scale and peak time since the deposit (us)."""
        t = np.arange(0.0, 80.0, 0.0005)
        dt = t - self.offset_us
        main, lobe = self._main(dt), self._lobe(dt)
        if self.undershoot_fraction > 0:
            # min(main - u lobe) / max(main - u lobe) = -f; solve for u by bisection (monotone).
            lo, hi = 0.0, 1.0
            for _ in range(60):
                u = 0.5 * (lo + hi)
                s = main - u * lobe
                if -s.min() / s.max() < self.undershoot_fraction:
                    lo = u
                else:
                    hi = u
            u = 0.5 * (lo + hi)
        else:
            u = 0.0
        s = main - u * lobe
        i = int(np.argmax(s))
        return float(u), float(1.0 / s[i]), float(t[i])

    # -- public ----------------------------------------------------------------------------
    @property
    def peak_time_us(self) -> float:
        """Time of the maximum after the deposit, us (offset + ~2.55 us)."""
        return self._norm[2]

    def __call__(self, t_us) -> np.ndarray:
        """Pulse value (peak = 1) at times ``t_us`` since the deposit; any shape, float64, us."""
        u, c, _ = self._norm
        dt = np.asarray(t_us, dtype=np.float64) - self.offset_us
        return c * (self._main(dt) - u * self._lobe(dt))

    def table(self, step_us: float = 0.002, span_us: float = 40.0) -> np.ndarray:
        """Look-up table ``s(k * step_us)``, k = 0..span/step, float32, for fast gathers.

        Beyond ``span_us`` the pulse is taken as 0 (by 40 us it is below 1e-4 of the peak).
        """
        return self(np.arange(0.0, span_us + step_us, step_us)).astype(np.float32)

    def template(self, t_hit_us, n_samples: int = N_SAMPLES, tick_us: float = TICK_US) -> np.ndarray:
        """Sampled pulses of unit peak for deposits at ``t_hit_us`` (shape (T,)) -> (T, n_samples).

        Sample ``k`` is taken at ``k * tick_us`` (the window starts at 0).
        """
        th = np.atleast_1d(np.asarray(t_hit_us, dtype=np.float64))
        return self(np.arange(n_samples) * tick_us - th[:, None])
