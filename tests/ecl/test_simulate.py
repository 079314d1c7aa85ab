"""ECL pulse shape, detector payload and truth simulator."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import toeplitz

from b2bkg.core.conditions import CONDITION_NAMES, ConditionsConfig
from b2bkg.core.errors import ConfigError
from b2bkg.ecl.detector import EclDetectorConfig, build_detector, default_detector
from b2bkg.ecl.geometry import crystal_region
from b2bkg.ecl.pulse import TICK_US, PulseShape
from b2bkg.ecl.simulate import EclSimConfig, iter_ecl_chunks, photon_rates, simulate_ecl


@pytest.fixture(scope="module")
def events():
    """Three events (3.2 MB), simulated once for the module."""
    wf, cond = zip(*iter_ecl_chunks(3, seed=7, chunk_size=2))
    return np.concatenate([w.waveforms for w in wf]), np.concatenate([c.values for c in cond])


def test_pulse_shape_facts():
    p = PulseShape()
    t = np.arange(0.0, 40.0, 0.0005)
    s = p(t)
    tp = p.peak_time_us
    assert abs(s.max() - 1.0) < 1e-9
    assert abs((tp - p.offset_us) - 2.55) < 0.02  # peak 2.55 us after the offset
    assert np.all(s[t <= p.offset_us] == 0.0)
    above = t[s >= 0.5]
    assert abs((above.max() - above.min()) - 1.89) < 0.03  # FWHM
    after = p(tp + np.array([1, 2, 3, 5]) * TICK_US)
    assert np.allclose(after, [0.80, 0.45, 0.20, 0.03], atol=0.015)
    assert abs(s.min() + 0.006) < 5e-4  # undershoot
    # vectorized over any shape
    assert p(np.zeros((2, 3))).shape == (2, 3)
    assert p.template([0.0, 1.0]).shape == (2, 31)
    with pytest.raises(ConfigError, match="tau_us"):
        PulseShape(tau_us=-1.0)


def test_detector_payload_fixed_and_sane():
    d = default_detector()
    d2 = build_detector(EclDetectorConfig())
    assert np.array_equal(d.pedestal_adu, d2.pedestal_adu) and np.array_equal(d.cholesky, d2.cholesky)
    assert abs(d.pedestal_adu.mean() - 3000) < 10 and d.pedestal_adu.std() > 20
    assert np.all((d.group_rms_adu >= 6) & (d.group_rms_adu <= 20))
    for a, L in zip(d.autocov_adu2, d.cholesky):
        assert np.allclose(L @ L.T, toeplitz(a))
    rms = d.noise_rms_adu()
    assert 6 <= rms.min() and rms.max() <= 20
    altered = build_detector(EclDetectorConfig(pedestal_adu=3500.0))
    assert abs(altered.pedestal_adu.mean() - 3500) < 10


def test_shapes_dtype_range(events):
    w, c = events
    assert w.shape == (3, 8736, 31) and w.dtype == np.int32
    assert w.min() >= 0 and w.max() < 2**18
    assert c.shape == (3, len(CONDITION_NAMES)) and c.dtype == np.float32
    assert np.all(c[:, :5] > 0.5) and np.all(c[:, :5] < 2)


def test_deterministic_and_chunk_independent(events):
    w, c = events
    # same seed, other chunking, starting in the middle: identical arrays
    w1, c1 = next(iter_ecl_chunks(2, seed=7, start=1, chunk_size=5))
    assert np.array_equal(w1.waveforms, w[1:3]) and np.array_equal(c1.values, c[1:3])
    w2, _ = next(iter_ecl_chunks(1, seed=8))
    assert not np.array_equal(w2.waveforms[0], w[0])


def test_pedestals_come_from_the_detector_not_the_seed(events):
    w, _ = events
    w2, _ = next(iter_ecl_chunks(3, seed=123))
    det = default_detector()
    est1 = np.median(w, axis=(0, 2))
    est2 = np.median(w2.waveforms, axis=(0, 2))
    assert np.corrcoef(est1, det.pedestal_adu)[0, 1] > 0.97
    assert np.median(np.abs(est1 - est2)) < 0.15 * det.pedestal_adu.std()  # seeds share the map


def test_noise_level_theta_dependence_and_tails(events):
    w, _ = events
    res = w - default_detector().mean_waveform_adu()[None]
    reg = crystal_region()
    robust = {r: 1.4826 * np.median(np.abs(res[:, reg == r])) for r in range(3)}
    assert 6 <= robust[1] <= 20  # barrel: mostly electronics noise
    assert robust[0] > robust[1] * 1.1  # forward endcap: more pile-up
    x = res[:, reg == 0].ravel().astype(np.float64)
    x = (x - x.mean()) / x.std()
    assert np.mean(x**4) - 3 > 1.0  # pile-up pulses: heavy tails, not Gaussian
    assert w.max() - 3000 > 10 * 20  # at least one energetic (> 10 MeV) deposit in 3 events


def test_conditions_scale_pileup():
    base = photon_rates(np.ones(6) * [1, 1, 1, 1, 1, 0])
    high = photon_rates(np.array([2.0, 1, 1, 1, 1, 0]))
    inj = photon_rates(np.array([1.0, 1, 1, 1, 1, 1]))
    assert np.all(high > base) and np.allclose(inj, 4 * base)
    reg = crystal_region()
    assert base[reg == 0].mean() > base[reg == 2].mean() > base[reg == 1].mean()
    # all events in injection: every crystal noisier than nominal
    cfg = ConditionsConfig(injection_probability=1.0)
    wi, ci = next(iter_ecl_chunks(1, seed=7, conditions=cfg))
    w0, c0 = next(iter_ecl_chunks(1, seed=7))
    assert ci.column("injection")[0] == 1.0 and c0.column("injection")[0] == 0.0
    assert wi.waveforms[0, reg == 0].std(axis=1).mean() > w0.waveforms[0, reg == 0].std(axis=1).mean()


def test_config_errors():
    with pytest.raises(ConfigError, match="spectrum_index"):
        EclSimConfig(spectrum_index=0.5)
    with pytest.raises(ConfigError, match="n_events"):
        next(iter_ecl_chunks(-1, seed=1))


def test_simulate_ecl_file_and_conditions_reuse(tmp_path, events):
    w, c = events
    out = simulate_ecl(2, 7, tmp_path / "ecl.h5", chunk_size=1, command="test")
    from b2bkg.io import open_file

    with open_file(out) as f:
        assert f.n_events == 2 and set(f.groups) == {"ecl", "conditions"}
        assert np.array_equal(f.read_ecl().waveforms, w[:2])
        assert f.read_conditions().names == CONDITION_NAMES
        assert f.meta["ecl_detector"] == default_detector().version
    # conditions taken from the file reproduce the events exactly
    w3, c3 = next(iter_ecl_chunks(2, seed=7, conditions=out))
    assert np.array_equal(w3.waveforms, w[:2]) and np.array_equal(c3.values, c[:2])
    assert not list(tmp_path.glob(".*tmp*"))
