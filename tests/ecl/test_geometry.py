"""ECL geometry: ring sizes, numbering, basf2 N x N neighbour windows."""

from __future__ import annotations

import numpy as np
import pytest

from b2bkg.core.errors import ConfigError
from b2bkg.ecl import geometry as geo


def _reference_window(cell: int, n: int) -> list[int]:
    """Straight port of basf2 ECLNeighbours::initializeN for one crystal (slow, for checking)."""
    sizes = geo.RING_SIZES.tolist()
    t0, p0 = (int(x[0]) for x in geo.theta_phi_id(np.array([cell])))
    inc = (p0 + n) % sizes[t0]
    dec = (p0 - n) % sizes[t0]
    out = []
    for t in range(t0 - n, t0 + n + 1):
        if t < 0 or t > 68:
            continue
        hi = int(np.rint(inc / sizes[t0] * sizes[t])) % sizes[t]
        lo = int(np.rint(dec / sizes[t0] * sizes[t])) % sizes[t]
        p = hi
        while True:
            out.append(int(geo.cell_id(t, p)))
            if p == lo:
                break
            p = (p - 1) % sizes[t]
    return out


def test_ring_sizes():
    s = geo.RING_SIZES
    assert len(s) == 69
    assert s[:13].sum() == 1152 and s[13:59].sum() == 6624 and s[59:].sum() == 960
    assert geo.N_CRYSTALS == 8736
    assert geo.cell_id(13, 0) == 1153 and geo.cell_id(59, 0) == 7777 and geo.cell_id(68, 63) == 8736


def test_numbering_round_trip():
    cells = np.arange(1, 8737)
    t, p = geo.theta_phi_id(cells)
    assert np.array_equal(geo.cell_id(t, p), cells)
    assert np.all(p < geo.RING_SIZES[t]) and np.all(np.diff(t) >= 0)
    with pytest.raises(ConfigError, match="cell id"):
        geo.theta_phi_id(np.array([0]))
    with pytest.raises(ConfigError, match="theta_id"):
        geo.cell_id(69, 0)


def test_angles():
    th = np.rad2deg(geo.crystal_theta())
    reg = geo.crystal_region()
    assert np.bincount(reg).tolist() == [1152, 6624, 960]
    assert 12 < th[reg == 0].min() and th[reg == 0].max() < 32
    assert 32 < th[reg == 1].min() and th[reg == 1].max() < 129
    assert 130 < th[reg == 2].min() and th[reg == 2].max() < 156
    phi = geo.crystal_phi()
    assert phi.min() > 0 and phi.max() < 2 * np.pi


def test_barrel_5x5_is_25_crystals():
    cell = int(geo.cell_id(30, 7))
    nb = geo.neighbours(cell, 5)
    t, p = geo.theta_phi_id(nb)
    assert len(nb) == 25 and cell in nb
    assert set(zip(t.tolist(), p.tolist())) == {(tt, pp) for tt in range(28, 33) for pp in range(5, 10)}
    counts = geo.neighbour_counts(5)
    barrel_inner = (geo.crystal_theta_id() >= 15) & (geo.crystal_theta_id() <= 56)
    assert np.all(counts[barrel_inner] == 25)


def test_phi_wrap():
    nb = geo.neighbours(int(geo.cell_id(20, 0)), 3)
    t, p = geo.theta_phi_id(nb)
    assert sorted(set(p.tolist())) == [0, 1, 143] and len(nb) == 9
    nb7 = geo.neighbours(int(geo.cell_id(40, 142)), 7)
    assert sorted(set(geo.theta_phi_id(nb7)[1].tolist())) == [0, 1, 139, 140, 141, 142, 143]


def test_endcap_barrel_boundary_and_asymmetry():
    # seed in the barrel's first ring: forward ring 12 (144) below, ring 14 above
    t, p = geo.theta_phi_id(geo.neighbours(int(geo.cell_id(13, 0)), 3))
    assert sorted(zip(t.tolist(), p.tolist())) == sorted((tt, pp) for tt in (12, 13, 14) for pp in (143, 0, 1))
    # 96-crystal ring 10 -> 144-crystal ring 11: phi +-1 of 96 projects to 142..2 (5 crystals)
    t, p = geo.theta_phi_id(geo.neighbours(int(geo.cell_id(10, 0)), 3))
    assert sorted(p[t == 11].tolist()) == [0, 1, 2, 142, 143]
    assert sorted(p[t == 9].tolist()) == [0, 1, 95]
    # and back: from ring 11 only 2-3 crystals of ring 10; not symmetric
    t, p = geo.theta_phi_id(geo.neighbours(int(geo.cell_id(11, 2)), 3))
    assert sorted(p[t == 10].tolist()) == [1, 2]
    assert int(geo.cell_id(11, 2)) in geo.neighbours(int(geo.cell_id(10, 0)), 3)
    assert int(geo.cell_id(10, 0)) not in geo.neighbours(int(geo.cell_id(11, 2)), 3)
    # backward boundary: ring 58 (barrel) -> 59, 60 (144) and 61 (96) in a 7x7
    t, _ = geo.theta_phi_id(geo.neighbours(int(geo.cell_id(58, 5)), 7))
    assert np.bincount(t, minlength=69)[55:62].tolist() == [7, 7, 7, 7, 7, 7, 5]
    # first ring: no ring below 0
    t, _ = geo.theta_phi_id(geo.neighbours(1, 7))
    assert t.min() == 0 and t.max() == 3


@pytest.mark.parametrize("size", [3, 5, 7])
def test_table_matches_basf2_port(size):
    rng = np.random.default_rng(size)
    cells = np.concatenate([np.arange(1, 8737, 97), rng.integers(1, 8737, 60), [1, 48, 1152, 1153, 7776, 7777, 8736]])
    table = geo.neighbour_table(size)
    for c in cells:  # reference is a per-crystal loop; the table is vectorized
        row = table[c - 1]
        assert (row[row >= 0] + 1).tolist() == _reference_window(int(c), (size - 1) // 2)
    assert not table.flags.writeable


def test_window_contains_seed_and_size_errors():
    for size in (3, 5, 7):
        table = geo.neighbour_table(size)
        assert np.all((table == np.arange(8736)[:, None]).sum(axis=1) == 1)
        assert len(np.unique(table[1000][table[1000] >= 0])) == (table[1000] >= 0).sum()
    with pytest.raises(ConfigError, match="window size"):
        geo.neighbour_table(4)


def test_barrel_map():
    v = np.arange(8736)
    img = geo.barrel_map(v)
    assert img.shape == (46, 144) and img[0, 0] == 1152 and img[45, 143] == 7775
