"""PXD truth simulator: determinism, contract, response to conditions, statistics."""

import dataclasses

import numpy as np
import pytest

from b2bkg.core.conditions import ConditionsConfig
from b2bkg.core.config import from_dict, to_dict
from b2bkg.core.errors import ConfigError
from b2bkg.core.seeding import event_rng
from b2bkg.io.events import PxdDigits
from b2bkg.pxd.detector import PxdDetectorConfig, build_detector, default_detector
from b2bkg.pxd.simulate import PxdSimConfig, iter_pxd_chunks, simulate_pxd, simulate_pxd_event

NOMINAL = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])


@pytest.fixture(scope="module")
def three_events():
    return PxdDigits.concat([d for d, _ in iter_pxd_chunks(3, 7, chunk_size=3)])


def test_same_seed_same_digits_and_chunk_independent(three_events):
    again = PxdDigits.concat([d for d, _ in iter_pxd_chunks(3, 7, chunk_size=2)])
    assert again == three_events
    shifted = PxdDigits.concat([d for d, _ in iter_pxd_chunks(2, 7, chunk_size=1, start=1)])
    assert shifted == three_events.slice(1, 3)
    other = PxdDigits.concat([d for d, _ in iter_pxd_chunks(1, 8)])
    assert other != three_events.slice(0, 1)


def test_digits_in_range_unique_sorted_above_threshold(three_events):
    d = three_events
    d.validate()
    assert d.charge.min() >= PxdSimConfig().digitizer.threshold_adu
    for i in range(d.n_events):
        e = d.event(i)
        key = (e["sensor"].astype(np.int64) * 768 + e["vcell"]) * 250 + e["ucell"]
        assert np.all(np.diff(key) > 0)  # unique pixels, sorted by (sensor, vcell, ucell)


def test_detector_payload_is_fixed_and_masks_apply(three_events):
    a, b = default_detector(), build_detector(PxdDetectorConfig())
    np.testing.assert_array_equal(a.pedestal_adu, b.pedestal_adu)
    np.testing.assert_array_equal(a.dead, b.dead)
    key = (three_events.sensor.astype(np.int64) * 768 + three_events.vcell) * 250 + three_events.ucell
    assert not a.dead[key].any()
    # the ceiling is 255 - pedestal: no pixel exceeds it
    assert np.all(three_events.charge.astype(int) <= 255 - a.pedestal_adu[key].astype(int))


def test_luminosity_scales_two_photon():
    cfg = PxdSimConfig()
    only_tp = dataclasses.replace(cfg, **{n: dataclasses.replace(getattr(cfg, n), hits_per_event=0.0)
                                          for n in ("rbb", "synchrotron", "touschek_ler", "touschek_her", "beamgas_ler", "beamgas_her")})
    only_tp = dataclasses.replace(only_tp, digitizer=dataclasses.replace(cfg.digitizer, noise_hit_probability=0.0),
                                  detector=PxdDetectorConfig(hot_pixel_fraction=0.0))
    n1 = len(simulate_pxd_event(event_rng(3, "t", 0), NOMINAL, only_tp)["charge"])
    n2 = len(simulate_pxd_event(event_rng(3, "t", 0), np.array([2.0, 1, 1, 1, 1, 0]), only_tp)["charge"])
    assert 1.7 < n2 / n1 < 2.3
    # HER current drives synchrotron radiation, not two-photon
    n3 = len(simulate_pxd_event(event_rng(3, "t", 0), np.array([1.0, 2, 1, 1, 1, 0]), only_tp)["charge"])
    assert abs(n3 / n1 - 1) < 0.1


def test_conditions_raise_total_occupancy():
    base = np.mean([len(simulate_pxd_event(event_rng(4, "t", i), NOMINAL)["charge"]) for i in range(2)])
    hi = np.mean([len(simulate_pxd_event(event_rng(4, "t", i), np.array([1.0, 1.5, 1.5, 1.5, 1.5, 0]))["charge"]) for i in range(2)])
    assert hi > 1.1 * base


def test_bad_conditions_and_config_raise():
    with pytest.raises(ConfigError):
        simulate_pxd_event(event_rng(1, "t", 0), np.array([1.0, 1, 1]))
    with pytest.raises(ConfigError):
        from_dict(PxdSimConfig, {"two_photon": {"pt_power": 0.5}})
    with pytest.raises(ConfigError):
        from_dict(PxdSimConfig, {"digitizer": {"threshold_adu": 0}})
    with pytest.raises(ConfigError):
        list(iter_pxd_chunks(-1, 1))


def test_config_round_trip():
    cfg = PxdSimConfig()
    assert from_dict(PxdSimConfig, to_dict(cfg)) == cfg


def test_threshold_is_configurable():
    cfg = PxdSimConfig()
    hi = dataclasses.replace(cfg, digitizer=dataclasses.replace(cfg.digitizer, threshold_adu=12))
    e = simulate_pxd_event(event_rng(5, "t", 0), NOMINAL, hi)
    assert e["charge"].min() >= 12


def test_small_sample_statistics_near_reference(three_events):
    from b2bkg.pxd.calibrate import load_reference, summarize

    s, r = summarize(three_events), load_reference()
    assert s["layer_occupancy"][0] == pytest.approx(r["layer_occupancy"][0], rel=0.12)
    assert s["layer_occupancy"][1] == pytest.approx(r["layer_occupancy"][1], rel=0.12)
    assert s["charge_mode"] == 7
    assert s["charge_median"] == pytest.approx(r["charge_median"], rel=0.15)
    assert s["charge_mean"] == pytest.approx(r["charge_mean"], rel=0.15)
    assert 0.25 < s["cluster_size1_fraction"] < 0.55 and 2.2 < s["cluster_mean_size"] < 4.5
    assert s["l1_ladder_min_phi"] in (135.0, 180.0, 225.0)
    assert np.corrcoef(s["occupancy_per_sensor"][:16], r["occupancy_per_sensor"][:16])[0, 1] > 0.7


def test_simulate_pxd_writes_file(tmp_path):
    pytest.importorskip("h5py")
    from b2bkg.io import read_conditions, read_pxd

    out = simulate_pxd(2, 3, tmp_path / "x.h5", chunk_size=1, conditions=ConditionsConfig(lumi_scale=1.2))
    d = read_pxd(out)
    assert d == PxdDigits.concat([x for x, _ in iter_pxd_chunks(2, 3, conditions=ConditionsConfig(lumi_scale=1.2))])
    c = read_conditions(out)
    vals = c.values if hasattr(c, "values") else c[0]
    assert np.asarray(vals).shape == (2, 6)
