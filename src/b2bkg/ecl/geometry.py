"""ECL crystal geometry: numbering, polar angles and basf2-style N x N neighbour windows.

The Belle II ECL has 8736 CsI(Tl) crystals in 69 rings of constant polar angle (``thetaId``
0..68): the forward endcap (thetaId 0-12, 1152 crystals), the barrel (13-58, 46 rings of 144,
6624 crystals) and the backward endcap (59-68, 960 crystals). ``cellId`` (1..8736) runs ring by
ring and, inside a ring, over ``phiId`` 0..N_ring-1.

Neighbour windows follow basf2's ``ECLNeighbours`` "N" definition: the window of half-size ``n``
takes the phi ids ``phiId +- n`` of the seed ring, turns them into *fractions of that ring*,
projects these fractions onto each ring ``thetaId - n .. thetaId + n`` (rounding half to even like
``TMath::Nint``) and keeps every phi id in between, wrapping around 2 pi. In rings of a different
size the window therefore has a different width, and the relation is not symmetric
(``b in window(a)`` does not imply ``a in window(b)``). One deviation from basf2: a projected
upper edge equal to the ring size is wrapped to 0 (basf2 wraps only the lower edge), so every
window stays inside its ring.

Polar angles are approximate (linear inside each region, between the first and last ring centres
of the real detector: forward 12.4-31.4 deg, barrel 32.2-128.7 deg, backward 130.7-155.1 deg);
phi is the centre of the crystal, ``2 pi (phiId + 0.5) / N_ring``.

Example:
    >>> int(cell_id(13, 0)), theta_phi_id(np.array([1153]))[0].tolist()
    (1153, [13])
    >>> int(neighbour_counts(5)[cell_id(30, 7) - 1])
    25
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from b2bkg.core.errors import ConfigError

__all__ = [
    "N_CRYSTALS",
    "N_RINGS",
    "RING_SIZES",
    "RING_START",
    "FORWARD_RINGS",
    "BARREL_RINGS",
    "BACKWARD_RINGS",
    "RING_THETA_DEG",
    "REGION_NAMES",
    "cell_id",
    "theta_phi_id",
    "crystal_theta_id",
    "crystal_phi_id",
    "crystal_region",
    "crystal_theta",
    "crystal_phi",
    "neighbour_table",
    "neighbour_counts",
    "neighbours",
    "barrel_map",
]

#: crystals per theta ring, thetaId 0..68 (basf2 ``m_crystalsPerRing``)
RING_SIZES: np.ndarray = np.array(
    [48, 48, 64, 64, 64, 96, 96, 96, 96, 96, 96, 144, 144]
    + [144] * 46
    + [144, 144, 96, 96, 96, 96, 96, 64, 64, 64],
    dtype=np.int64,
)
N_RINGS = 69
N_CRYSTALS = int(RING_SIZES.sum())  # 8736
#: first 0-based crystal index of each ring, shape (69,)
RING_START: np.ndarray = np.concatenate([[0], np.cumsum(RING_SIZES)[:-1]]).astype(np.int64)
FORWARD_RINGS = range(0, 13)
BARREL_RINGS = range(13, 59)
BACKWARD_RINGS = range(59, 69)
REGION_NAMES = ("forward", "barrel", "backward")

#: approximate polar angle of each ring centre, degrees, shape (69,)
RING_THETA_DEG: np.ndarray = np.concatenate(
    [np.linspace(12.4, 31.4, 13), np.linspace(32.2, 128.7, 46), np.linspace(130.7, 155.1, 10)]
)

_THETA_OF_CRYSTAL = np.repeat(np.arange(N_RINGS, dtype=np.int64), RING_SIZES)
_PHI_OF_CRYSTAL = np.arange(N_CRYSTALS, dtype=np.int64) - RING_START[_THETA_OF_CRYSTAL]
for _a in (RING_SIZES, RING_START, RING_THETA_DEG, _THETA_OF_CRYSTAL, _PHI_OF_CRYSTAL):
    _a.setflags(write=False)


def cell_id(theta_id, phi_id) -> np.ndarray:
    """basf2 cellId (1..8736) of ``(thetaId, phiId)``; ``phi_id`` is taken modulo the ring size.

    Args:
        theta_id: int array-like, 0..68.
        phi_id: int array-like (broadcast with ``theta_id``).
    Returns:
        int64 array of cellIds.
    """
    t = np.asarray(theta_id, dtype=np.int64)
    if t.size and (t.min() < 0 or t.max() >= N_RINGS):
        raise ConfigError(f"theta_id: values {int(t.min())}..{int(t.max())} outside 0..{N_RINGS - 1}")
    p = np.asarray(phi_id, dtype=np.int64) % RING_SIZES[t]
    return RING_START[t] + p + 1


def _check_cells(cells) -> np.ndarray:
    c = np.asarray(cells, dtype=np.int64)
    if c.size and (c.min() < 1 or c.max() > N_CRYSTALS):
        raise ConfigError(f"cell id: values {int(c.min())}..{int(c.max())} outside 1..{N_CRYSTALS}")
    return c


def theta_phi_id(cells) -> tuple[np.ndarray, np.ndarray]:
    """``(thetaId, phiId)`` of basf2 cellIds (1..8736), int64 arrays of the input's shape."""
    c = _check_cells(cells) - 1
    return _THETA_OF_CRYSTAL[c], _PHI_OF_CRYSTAL[c]


def crystal_theta_id() -> np.ndarray:
    """thetaId of every crystal in cellId order, shape (8736,), int64 (read-only)."""
    return _THETA_OF_CRYSTAL


def crystal_phi_id() -> np.ndarray:
    """phiId of every crystal in cellId order, shape (8736,), int64 (read-only)."""
    return _PHI_OF_CRYSTAL


def crystal_region() -> np.ndarray:
    """Region of every crystal, shape (8736,), int8: 0 forward endcap, 1 barrel, 2 backward endcap."""
    t = _THETA_OF_CRYSTAL
    return ((t >= BARREL_RINGS.start).astype(np.int8) + (t >= BACKWARD_RINGS.start).astype(np.int8))


def crystal_theta() -> np.ndarray:
    """Polar angle of every crystal centre, radians, shape (8736,), float64."""
    return np.deg2rad(RING_THETA_DEG)[_THETA_OF_CRYSTAL]


def crystal_phi() -> np.ndarray:
    """Azimuth of every crystal centre, radians in [0, 2 pi), shape (8736,), float64."""
    return 2.0 * np.pi * (_PHI_OF_CRYSTAL + 0.5) / RING_SIZES[_THETA_OF_CRYSTAL]


def _half_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size not in (1, 3, 5, 7, 9, 11):
        raise ConfigError(f"window size: {size!r} is not one of 1, 3, 5, 7, 9, 11 (N of an N x N window)")
    return (int(size) - 1) // 2


@lru_cache(maxsize=None)
def neighbour_table(size: int) -> np.ndarray:
    """Padded N x N neighbour table (basf2 ``ECLNeighbours("N", n)``), the seed included.

    Args:
        size: N of the N x N window (odd, 1..11; 3, 5 and 7 are the ones the selection uses).
    Returns:
        int64 array of shape (8736, K), read-only: row ``i`` lists the 0-based crystal indices
        (cellId - 1) of the window around crystal ``i``, ring by ring from ``thetaId - n`` to
        ``thetaId + n``, padded with -1 to the widest window K. Use :func:`neighbour_counts`
        or ``table >= 0`` for the valid entries.
    """
    n = _half_size(size)
    t0, p0 = _THETA_OF_CRYSTAL, _PHI_OF_CRYSTAL
    n0 = RING_SIZES[t0]
    phi_inc = (p0 + n) % n0  # (8736,)
    phi_dec = (p0 - n) % n0
    frac_inc = phi_inc / n0
    frac_dec = phi_dec / n0
    rings = []  # per theta offset: (theta (8736,), start phi (8736,), count (8736,))
    for dt in range(-n, n + 1):
        t = t0 + dt
        valid = (t >= 0) & (t < N_RINGS)
        tc = np.clip(t, 0, N_RINGS - 1)
        nt = RING_SIZES[tc]
        hi = np.rint(frac_inc * nt).astype(np.int64) % nt  # TMath::Nint: half to even
        lo = np.rint(frac_dec * nt).astype(np.int64) % nt
        count = np.where(valid, (hi - lo) % nt + 1, 0)
        rings.append((tc, hi, count))
    k_max = int(sum(c for _, _, c in rings).max())
    table = np.full((N_CRYSTALS, k_max), -1, dtype=np.int64)
    col = np.zeros(N_CRYSTALS, dtype=np.int64)
    width = max(int(c.max()) for _, _, c in rings)
    for tc, hi, count in rings:
        j = np.arange(width)  # basf2 order: from the upper edge downwards in phi
        phis = (hi[:, None] - j[None, :]) % RING_SIZES[tc][:, None]  # (8736, width)
        idx = RING_START[tc][:, None] + phis
        ok = j[None, :] < count[:, None]
        r, jj = np.nonzero(ok)
        table[r, col[r] + jj] = idx[r, jj]
        col = col + count
    assert np.array_equal(col, (table >= 0).sum(1)), "internal: neighbour table fill"
    table.setflags(write=False)
    return table


def neighbour_counts(size: int) -> np.ndarray:
    """Number of crystals in the N x N window of every crystal, shape (8736,), int64."""
    return (neighbour_table(size) >= 0).sum(axis=1)


def neighbours(cell: int, size: int) -> np.ndarray:
    """basf2 cellIds (1-based) in the N x N window of one cellId, seed included, basf2 order."""
    c = int(_check_cells(cell))
    row = neighbour_table(size)[c - 1]
    return row[row >= 0] + 1


def barrel_map(values: np.ndarray) -> np.ndarray:
    """Barrel values as an image: (..., 8736) -> (..., 46, 144) indexed [thetaId - 13, phiId]."""
    v = np.asarray(values)
    if v.shape[-1] != N_CRYSTALS:
        raise ConfigError(f"barrel_map: last axis has {v.shape[-1]} entries, expected {N_CRYSTALS}")
    start = int(RING_START[BARREL_RINGS.start])
    return v[..., start : start + 46 * 144].reshape(*v.shape[:-1], 46, 144)
