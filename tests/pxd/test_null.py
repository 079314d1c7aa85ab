"""pxd-null: per-sensor Poisson pixels, uniform positions, empirical charge spectrum."""

from __future__ import annotations

import numpy as np
import pytest

from b2bkg.io import FileWriter, read_pxd
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits


@pytest.fixture(scope="module")
def null_run(tmp_path_factory):
    from b2bkg.training.trainer import train

    tmp = tmp_path_factory.mktemp("null")
    rng = np.random.default_rng(2)
    events = []
    for _ in range(5):
        # sensor 3: ~400 pixels, sensor 20: ~100, charges only 7, 10 and 40 ADU
        s = np.r_[np.full(400, 3), np.full(100, 20)]
        key = np.unique(s * N_UCELLS * N_VCELLS + rng.integers(0, N_UCELLS * N_VCELLS, len(s)))
        s, p = key // (N_UCELLS * N_VCELLS), key % (N_UCELLS * N_VCELLS)
        events.append(dict(sensor=s, ucell=p % N_UCELLS, vcell=p // N_UCELLS, charge=rng.choice([7, 10, 40], len(s))))
    data = PxdDigits.from_events(events)
    with FileWriter(tmp / "train.h5", seed=1) as w:
        w.append(pxd=data)
    return train("pxd-null", tmp / "train.h5", tmp / "run"), data


def test_null_occupancy_and_spectrum_match_training(null_run, tmp_path):
    from b2bkg.generate import generate

    run, data = null_run
    g = read_pxd(generate(run, 200, seed=3, out=tmp_path / "g.h5"))
    g.validate()
    per_sensor = np.bincount(g.sensor, minlength=N_SENSORS) / g.n_events
    truth = np.bincount(data.sensor, minlength=N_SENSORS) / data.n_events
    assert np.allclose(per_sensor, truth, rtol=0.02, atol=0.01)  # Poisson mean: ~0.25 % statistical
    assert set(np.unique(g.charge).tolist()) == {7, 10, 40}
    assert g.ucell.max() < N_UCELLS and g.vcell.max() < N_VCELLS
    # uniform positions: both halves of sensor 3 get about half the pixels
    m = g.sensor == 3
    assert abs((g.vcell[m] < N_VCELLS // 2).mean() - 0.5) < 0.02
    for i in range(3):  # distinct pixels
        e = g.event(i)
        k = (e["sensor"].astype(np.int64) * N_VCELLS + e["vcell"]) * N_UCELLS + e["ucell"]
        assert len(np.unique(k)) == len(k)


def test_null_deterministic_and_batch_independent(null_run, tmp_path):
    from b2bkg.generate import generate

    run, _ = null_run
    a = read_pxd(generate(run, 5, seed=1, out=tmp_path / "a.h5", batch_size=5))
    b = read_pxd(generate(run, 5, seed=1, out=tmp_path / "b.h5", batch_size=2))
    for k in ("offsets", "sensor", "ucell", "vcell", "charge"):
        assert np.array_equal(getattr(a, k), getattr(b, k))
