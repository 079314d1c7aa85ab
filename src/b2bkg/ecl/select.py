"""The seed's selection of "interesting" ECL waveforms and the hybrid event.

Selection (seed 004): a *seed* crystal has a fitted energy above ``seed_mev`` (10 MeV) and is a
local maximum of its 5x5 window; the whole 5x5 window around each seed is kept, and in the 7x7
window the crystals above ``neighbour_mev`` (5 MeV) are kept too. Energies come from the template
fit of :mod:`b2bkg.ecl.fit`; windows are the basf2 N x N neighbour maps of
:mod:`b2bkg.ecl.geometry`.

The hybrid event keeps the selected waveforms of a recorded (or truth) event and takes all the
others from a generator: ``hybrid(keep_from, generated, mask)``. Models train on the
*non-selected* waveforms (``~mask``).

Example:
    >>> e = np.zeros((1, 8736)); e[0, 5000] = 50.0
    >>> m = select_from_energies(e)
    >>> int(m.sum())
    25
"""

from __future__ import annotations

import numpy as np

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import EclWaveforms

from .fit import fit_energies
from .geometry import N_CRYSTALS, neighbour_table
from .pulse import PulseShape

__all__ = ["crystal_energies", "find_seeds", "select_from_energies", "select_waveforms", "hybrid", "kept_fraction"]


def _waveform_array(wf, name: str) -> np.ndarray:
    w = wf.waveforms if isinstance(wf, EclWaveforms) else np.asarray(wf)
    if w.ndim != 3 or w.shape[1:] != (N_CRYSTALS, 31):
        raise ConfigError(f"{name}: waveforms of shape {w.shape}, expected (n_events, {N_CRYSTALS}, 31)")
    return w


def _energy_array(energy) -> np.ndarray:
    e = np.asarray(energy, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != N_CRYSTALS:
        raise ConfigError(f"energy: shape {e.shape}, expected (n_events, {N_CRYSTALS})")
    return e


def crystal_energies(waveforms, *, adc_per_mev: float = 20.0, pulse: PulseShape | None = None) -> np.ndarray:
    """Fitted energy of every crystal: (n_events, 8736, 31) ADC -> (n_events, 8736) MeV."""
    return fit_energies(_waveform_array(waveforms, "waveforms"), adc_per_mev=adc_per_mev, pulse=pulse)


def find_seeds(energy: np.ndarray, seed_mev: float = 10.0) -> np.ndarray:
    """Seed crystals: E > seed_mev and E >= every other crystal of its 5x5 window.

    Args:
        energy: (n_events, 8736), MeV.
    Returns:
        bool (n_events, 8736).
    """
    e = _energy_array(energy)
    nb = neighbour_table(5)
    padded = np.concatenate([e, np.full((len(e), 1), -np.inf)], axis=1)  # index -1 -> -inf
    local_max = padded[:, nb].max(axis=2)  # (n_events, 8736)
    return (e > seed_mev) & (e >= local_max)


def select_from_energies(energy: np.ndarray, *, seed_mev: float = 10.0, neighbour_mev: float = 5.0) -> np.ndarray:
    """The seed's selection mask from crystal energies.

    Args:
        energy: (n_events, 8736), MeV.
    Returns:
        bool (n_events, 8736): True for the waveforms to keep from data.
    """
    e = _energy_array(energy)
    seeds = find_seeds(e, seed_mev)
    ev, cr = np.nonzero(seeds)
    mask = np.zeros(e.shape, dtype=bool)
    if len(ev) == 0:
        return mask
    nb5 = neighbour_table(5)[cr]  # (S, K5)
    ok5 = nb5 >= 0
    mask[np.broadcast_to(ev[:, None], nb5.shape)[ok5], nb5[ok5]] = True
    nb7 = neighbour_table(7)[cr]  # (S, K7)
    ev7 = np.broadcast_to(ev[:, None], nb7.shape)
    ok7 = nb7 >= 0
    hot = np.zeros(nb7.shape, dtype=bool)
    hot[ok7] = e[ev7[ok7], nb7[ok7]] > neighbour_mev
    mask[ev7[hot], nb7[hot]] = True
    return mask


def select_waveforms(
    waveforms, *, seed_mev: float = 10.0, neighbour_mev: float = 5.0, adc_per_mev: float = 20.0, pulse: PulseShape | None = None
) -> np.ndarray:
    """Fit the energies of (n_events, 8736, 31) waveforms and return the selection mask (n_events, 8736)."""
    e = crystal_energies(waveforms, adc_per_mev=adc_per_mev, pulse=pulse)
    return select_from_energies(e, seed_mev=seed_mev, neighbour_mev=neighbour_mev)


def hybrid(keep_from: EclWaveforms, generated: EclWaveforms, mask: np.ndarray) -> EclWaveforms:
    """Kept waveforms of ``keep_from`` where ``mask``, generated ones elsewhere.

    Args:
        keep_from: recorded events, waveforms (n, 8736, 31).
        generated: generated events, waveforms (n, 8736, 31).
        mask: bool (n, 8736), e.g. from :func:`select_waveforms` on ``keep_from``.
    Returns:
        EclWaveforms (n, 8736, 31) int32.
    """
    a = _waveform_array(keep_from, "keep_from")
    b = _waveform_array(generated, "generated")
    m = np.asarray(mask)
    if a.shape != b.shape:
        raise ConfigError(f"hybrid: keep_from has {a.shape[0]} events, generated {b.shape[0]}: they must match")
    if m.dtype != bool or m.shape != a.shape[:2]:
        raise ConfigError(f"hybrid: mask of shape {m.shape} dtype {m.dtype}, expected bool {a.shape[:2]}")
    return EclWaveforms(np.where(m[:, :, None], a, b))


def kept_fraction(mask: np.ndarray) -> float:
    """Fraction of waveforms the selection keeps (what the hybrid does not generate)."""
    return float(np.mean(mask))
