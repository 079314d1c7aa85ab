"""conditioning_check: occupancy bias, per-layer bias, per-sensor errors and the worst sensor's pull."""

from __future__ import annotations

import numpy as np
import pytest

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import PxdDigits
from b2bkg.pxd.conditioning import conditioning_check, format_conditioning, plot_conditioning
from b2bkg.pxd.geometry import LAYER


def poisson_digits(rate: np.ndarray, n_events: int, seed: int) -> PxdDigits:
    """Events with Poisson(rate[s]) single pixels on each sensor s (distinct pixels)."""
    rng = np.random.default_rng(seed)
    events = []
    for _ in range(n_events):
        n = rng.poisson(rate)
        sensor = np.repeat(np.arange(40), n)
        cell = np.concatenate([rng.choice(250 * 768, k, replace=False) for k in n])
        events.append({"sensor": sensor, "ucell": cell // 768, "vcell": cell % 768, "charge": np.full(len(cell), 20)})
    return PxdDigits.from_events(events)


def test_identical_samples_have_no_error():
    t = poisson_digits(np.full(40, 50.0), 20, 1)
    (row,) = conditioning_check({"same": (t, t)})
    assert row["occupancy_bias_pct"] == 0 and row["layer_bias_pct"] == [0.0, 0.0]
    assert row["sensor_mean_abs_err_pct"] == 0 and row["sensor_max_abs_err_pct"] == 0 and row["worst_pull"] == 0
    assert row["n_truth"] == row["n_generated"] == 20


def test_finds_a_biased_sensor_and_layer():
    rate = np.full(40, 400.0)
    truth = poisson_digits(rate, 60, 2)
    biased = rate.copy()
    biased[7] *= 1.2  # one sensor 20 % high
    gen = poisson_digits(biased, 60, 3)
    (row,) = conditioning_check({"lumi 1.7x": (truth, gen)})
    assert row["worst_sensor"] == 7
    assert row["sensor_max_abs_err_pct"] == pytest.approx(20, abs=3)
    assert row["worst_pull"] > 5  # stat. error per sensor ~ sqrt(2 / (60 * 400)) ~ 0.9 %
    assert row["sensor_stat_err_pct"] == pytest.approx(100 * np.sqrt(2 / (60 * 400)), rel=0.2)
    l1, l2 = row["layer_bias_pct"]
    expect = 100 * 0.2 / (LAYER == LAYER[7]).sum()
    assert (l1 if LAYER[7] == 1 else l2) == pytest.approx(expect, abs=1.0)
    text = format_conditioning([row])
    assert "lumi 1.7x" in text and "sensor 7" in text
    assert row["sensor_rel_err_pct"][7] == pytest.approx(row["sensor_max_abs_err_pct"])
    assert len(row["sensor_stat_pct"]) == 40 and all(s > 0 for s in row["sensor_stat_pct"])


def test_unbiased_samples_stay_within_statistics():
    rate = np.full(40, 300.0)
    rows = conditioning_check({"a": (poisson_digits(rate, 40, 4), poisson_digits(rate, 40, 5))})
    assert abs(rows[0]["worst_pull"]) < 4.5 and abs(rows[0]["occupancy_bias_pct"]) < 1.0


def test_empty_sample_is_refused():
    t = poisson_digits(np.full(40, 5.0), 2, 6)
    with pytest.raises(ConfigError, match="no events"):
        conditioning_check({"x": (t, t.slice(0, 0))})


def test_plot_is_written(tmp_path):
    rate = np.full(40, 100.0)
    rows = conditioning_check({"a": (poisson_digits(rate, 5, 7), poisson_digits(rate, 5, 8)),
                               "b": (poisson_digits(rate, 5, 9), poisson_digits(rate * 1.1, 5, 10))})
    p = plot_conditioning(rows, tmp_path / "cond.png")
    assert p.stat().st_size > 5000 and not list(tmp_path.glob(".*tmp*"))
