"""PXD digit overlay: signal digits + background digits, charges of the same pixel added.

In a signal + background overlay the charges of a pixel fired by both add up [src: basf2
``PXDDigit`` merging]; the 8-bit format saturates the sum at 255 ADU. The merge is one sort and
one segmented reduction over a linear pixel key

    key = ((event * 40 + sensor) * 250 + ucell) * 768 + vcell          (int64)

so the output hits of every event come out sorted by (sensor, ucell, vcell), with no Python loop
over events or hits.

Example:
    >>> from b2bkg.io import PxdDigits
    >>> sig = PxdDigits([0, 2], sensor=[0, 0], ucell=[5, 6], vcell=[5, 5], charge=[200, 20])
    >>> bkg = PxdDigits([0, 2], sensor=[0, 3], ucell=[5, 1], vcell=[5, 1], charge=[100, 9])
    >>> out = overlay_pxd(sig, bkg)
    >>> out.sensor.tolist(), out.charge.tolist()
    ([0, 0, 3], [255, 20, 9])
"""

from __future__ import annotations

import numpy as np

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits

__all__ = ["overlay_pxd", "pixel_event_key", "CHARGE_MAX_ADU"]

CHARGE_MAX_ADU = 255  #: 8-bit digit format: overlaid charges saturate here


def pixel_event_key(event: np.ndarray, sensor: np.ndarray, ucell: np.ndarray, vcell: np.ndarray) -> np.ndarray:
    """Linear pixel key ``((event * 40 + sensor) * 250 + ucell) * 768 + vcell``, int64, shape of the inputs.

    Sorting by it sorts hits by (event, sensor, ucell, vcell).
    """
    e = np.asarray(event, np.int64)
    return ((e * N_SENSORS + np.asarray(sensor, np.int64)) * N_UCELLS + np.asarray(ucell, np.int64)) * N_VCELLS + np.asarray(vcell, np.int64)


def overlay_pxd(signal: PxdDigits, background: PxdDigits, *, return_signal_hit: bool = False):
    """Overlay the digits of ``signal`` event ``i`` onto those of ``background`` event ``i``.

    Args:
        signal: n events of signal digits (any hit order; a pixel may appear more than once, e.g.
            two signal particles in one pixel: all its charges are summed).
        background: the same number of events of background digits.
        return_signal_hit: also return, for every output hit, the index of a signal hit in that
            pixel (into the signal hit arrays) or -1 for a pure background pixel.

    Returns:
        :class:`PxdDigits` with n events, hits sorted by (sensor, ucell, vcell) within each event,
        charge = min(sum of the charges of the pixel, 255) ADU (uint8); with
        ``return_signal_hit`` a tuple ``(digits, signal_hit)``, signal_hit shape (n_out_hits,), int64.

    Raises:
        ConfigError: the two inputs hold different numbers of events.
    """
    if signal.n_events != background.n_events:
        raise ConfigError(f"overlay: signal has {signal.n_events} events but background {background.n_events} (they are overlaid event by event)")
    n_ev = signal.n_events
    ev = np.concatenate([signal.event_index(), background.event_index()])
    key = pixel_event_key(
        ev,
        np.concatenate([signal.sensor, background.sensor]),
        np.concatenate([signal.ucell, background.ucell]),
        np.concatenate([signal.vcell, background.vcell]),
    )
    charge = np.concatenate([signal.charge, background.charge]).astype(np.int32)
    order = np.argsort(key)  # order inside a pixel is irrelevant: sum and max commute
    skey = key[order]
    if len(skey):
        starts = np.flatnonzero(np.r_[True, skey[1:] != skey[:-1]])
    else:
        starts = np.zeros(0, np.int64)
    ukey = skey[starts]
    qsum = np.add.reduceat(charge[order], starts) if len(starts) else np.zeros(0, np.int32)
    q = np.minimum(qsum, CHARGE_MAX_ADU).astype(np.uint8)
    vcell = ukey % N_VCELLS
    rest = ukey // N_VCELLS
    ucell = rest % N_UCELLS
    rest //= N_UCELLS
    sensor = rest % N_SENSORS
    event = rest // N_SENSORS
    offsets = np.searchsorted(event, np.arange(n_ev + 1, dtype=np.int64)).astype(np.int64)
    out = PxdDigits(offsets, sensor, ucell, vcell, q)
    if not return_signal_hit:
        return out
    n_sig = signal.n_hits
    src = np.concatenate([np.arange(n_sig, dtype=np.int64), np.full(background.n_hits, -1, np.int64)])
    sig_hit = np.maximum.reduceat(src[order], starts) if len(starts) else np.zeros(0, np.int64)
    return out, sig_hit
