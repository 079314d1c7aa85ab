"""ECL waveform overlay: signal waveforms (no pedestal) added onto background waveforms (with it).

Background waveforms (random-trigger-like or generated) carry the crystal pedestal (about 3000 ADC
counts); signal waveforms are the deposited energy through the pulse template at the signal time,
without pedestal and noise, so the overlay is a plain sum, clamped to the 18-bit ADC range
0 .. 2**18 - 1.

Example:
    >>> import numpy as np
    >>> from b2bkg.io import EclWaveforms
    >>> bkg = EclWaveforms(np.full((1, 8736, 31), 3000))
    >>> sig = np.zeros((1, 8736, 31), np.int32); sig[0, 0, 10] = 300000
    >>> out = overlay_ecl(EclWaveforms(sig), bkg)
    >>> int(out.waveforms[0, 0, 10]), int(out.waveforms[0, 1, 10])
    (262143, 3000)
"""

from __future__ import annotations

import numpy as np

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import ADC_MAX_ECL, EclWaveforms

__all__ = ["overlay_ecl", "ADC_MAX_ECL"]


def overlay_ecl(signal: EclWaveforms, background: EclWaveforms) -> EclWaveforms:
    """Add signal waveforms onto background waveforms event by event, clamped to 0 .. 2**18-1.

    Args:
        signal: waveforms without pedestal, shape (n, 8736, 31), ADC counts, int32.
        background: waveforms with pedestal, same shape.

    Returns:
        :class:`EclWaveforms`, shape (n, 8736, 31), int32.
    """
    s, b = signal.waveforms, background.waveforms
    if s.shape != b.shape:
        raise ConfigError(f"overlay: signal waveforms of shape {s.shape} do not match background {b.shape}")
    out = s.astype(np.int64) + b
    np.clip(out, 0, ADC_MAX_ECL, out=out)
    return EclWaveforms(out.astype(np.int32))
