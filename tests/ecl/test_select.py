"""Template fit, the seed's selection, the hybrid event and the barrel-map plot."""

from __future__ import annotations

import numpy as np
import pytest

from b2bkg.core.errors import ConfigError
from b2bkg.ecl import geometry as geo
from b2bkg.ecl.fit import fit_waveforms
from b2bkg.ecl.plots import plot_barrel_map
from b2bkg.ecl.pulse import TICK_US, PulseShape
from b2bkg.ecl.select import crystal_energies, find_seeds, hybrid, select_from_energies, select_waveforms
from b2bkg.io.events import EclWaveforms


def test_fit_recovers_amplitude_time_pedestal():
    rng = np.random.default_rng(0)
    p = PulseShape()
    amp = rng.uniform(50, 5000, 200)
    peak = rng.uniform(4, 26, 200) * TICK_US
    ped = rng.uniform(2800, 3200, 200)
    w = ped[:, None] + amp[:, None] * p.template(peak - p.peak_time_us)
    r = fit_waveforms(w)
    assert np.allclose(r.amplitude_adu, amp, rtol=2e-3)
    assert np.allclose(r.peak_time_us, peak, atol=0.04)
    assert np.allclose(r.pedestal_adu, ped, atol=0.01 * amp.max())
    noisy = w + rng.normal(0, 10, w.shape)
    rn = fit_waveforms(noisy)
    assert np.abs(rn.amplitude_adu - amp).mean() < 10
    assert fit_waveforms(np.full((2, 3, 31), 3000.0)).amplitude_adu.shape == (2, 3)
    with pytest.raises(ConfigError, match="31 samples"):
        fit_waveforms(np.zeros((4, 30)))


def _cluster_event(seed_cell: int, energies_mev: dict[int, float]) -> np.ndarray:
    e = np.zeros((1, 8736))
    for c, v in energies_mev.items():
        e[0, c - 1] = v
    return e


def test_seed_needs_energy_and_local_maximum():
    a = int(geo.cell_id(30, 10))
    b = int(geo.cell_id(31, 11))  # inside a's 5x5
    c = int(geo.cell_id(30, 40))  # far away
    e = _cluster_event(a, {a: 30.0, b: 20.0, c: 9.0})
    s = find_seeds(e)
    assert s[0, a - 1] and not s[0, b - 1] and not s[0, c - 1]
    assert s.sum() == 1


def test_selection_5x5_plus_hot_7x7():
    a = int(geo.cell_id(30, 10))
    hot7 = int(geo.cell_id(33, 13))  # in the 7x7, outside the 5x5
    cold7 = int(geo.cell_id(27, 7))
    far = int(geo.cell_id(30, 60))
    e = _cluster_event(a, {a: 40.0, hot7: 6.0, cold7: 4.0, far: 7.0})
    m = select_from_energies(e)
    expected = set(geo.neighbours(a, 5).tolist()) | {hot7}
    assert set((np.flatnonzero(m[0]) + 1).tolist()) == expected
    assert m.sum() == 26
    # endcap seed: window sizes differ from 25
    f = int(geo.cell_id(3, 5))
    m = select_from_energies(_cluster_event(f, {f: 50.0}))
    assert m.sum() == geo.neighbour_counts(5)[f - 1]
    assert select_from_energies(np.zeros((2, 8736))).sum() == 0
    with pytest.raises(ConfigError, match="energy"):
        select_from_energies(np.zeros((2, 100)))


def test_select_waveforms_on_pulses():
    p = PulseShape()
    w = np.full((2, 8736, 31), 3000.0)
    seed = int(geo.cell_id(40, 100))
    w[1, seed - 1] += 20 * 25.0 * p.template(12 * TICK_US - p.peak_time_us)[0]  # 25 MeV
    e = crystal_energies(w)
    assert abs(e[1, seed - 1] - 25.0) < 0.1
    m = select_waveforms(w)
    assert m[0].sum() == 0 and m[1].sum() == 25 and m[1, seed - 1]


def test_hybrid():
    rng = np.random.default_rng(1)
    a = EclWaveforms(rng.integers(0, 5000, (2, 8736, 31)))
    b = EclWaveforms(rng.integers(0, 5000, (2, 8736, 31)))
    m = np.zeros((2, 8736), bool)
    m[0, :10] = True
    m[1, 5000] = True
    h = hybrid(a, b, m)
    assert h.waveforms.dtype == np.int32
    assert np.array_equal(h.waveforms[m], a.waveforms[m])
    assert np.array_equal(h.waveforms[~m], b.waveforms[~m])
    with pytest.raises(ConfigError, match="mask"):
        hybrid(a, b, m.astype(int))
    with pytest.raises(ConfigError, match="events"):
        hybrid(a, EclWaveforms(b.waveforms[:1]), m)


def test_simulated_events_select_a_few_percent():
    from b2bkg.ecl.simulate import iter_ecl_chunks

    wf, _ = next(iter_ecl_chunks(2, seed=3))
    m = select_waveforms(wf)
    assert 0.0005 < m.mean() < 0.08  # the energetic depositions are found, most waveforms are not kept


def test_barrel_map_plot(tmp_path):
    m = np.zeros(8736, bool)
    m[geo.neighbours(int(geo.cell_id(30, 10)), 5) - 1] = True
    out = plot_barrel_map(m, tmp_path / "map.png")
    assert out.exists() and out.stat().st_size > 1000
