"""Logic of the benchmark harness with trivial workloads (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


harness = _load("harness", ROOT / "benchmarks" / "harness.py")


def _sleeper(seconds: float, units: int = 1, calls: list | None = None):
    def setup(quick):
        def run():
            if calls is not None:
                calls.append(quick)
            time.sleep(seconds * units)
            return units

        return run

    return setup


@pytest.fixture
def reg():
    r = harness.Registry()
    r.workload("base", repeats=3, quick_repeats=1)(_sleeper(0.004))
    r.workload("fast", baseline="base", repeats=3, quick_repeats=1, target=harness.Target(min_ratio=1.5))(_sleeper(0.001, units=2))
    return r


def test_baseline_always_runs_first_and_ratios(reg):
    results = harness.run_all(reg, only=["fast"], log=lambda m: None)
    assert [r.name for r in results] == ["base", "fast"]
    base, fast = results
    assert base.status == fast.status == "ok"
    assert base.repeats == fast.repeats == 3 and len(fast.times_s) == 3
    assert fast.median_s == sorted(fast.times_s)[1]  # per-unit times (2 units per call), median of 3
    assert fast.ratio == pytest.approx(base.median_s / fast.median_s)
    assert base.ratio == 1.0
    assert fast.target_met == (fast.ratio >= 1.5)
    assert base.iqr_s >= 0 and base.mad_s >= 0 and base.min_s <= base.median_s
    assert fast.rate == pytest.approx(1 / fast.median_s)
    assert base.memory_method in ("vmhwm-reset", "ru_maxrss-delta")
    assert base.peak_traced_mb is not None and base.peak_traced_mb >= 0


def test_statistics_from_known_times(monkeypatch):
    r = harness.Registry()
    durations = iter([0.0, 1.0, 2.0, 3.0, 10.0])  # warm-up value ignored, then 4 timed repeats
    clock = {"t": 0.0}

    def setup(quick):
        def run():
            clock["t"] += next(durations)
            return 1

        return run

    r.workload("w", repeats=4, warmup=1)(setup)
    monkeypatch.setattr(harness.time, "perf_counter", lambda: clock["t"])
    (res,) = harness.run_all(r, log=lambda m: None)
    assert res.times_s == [1.0, 2.0, 3.0, 10.0]
    assert res.median_s == 2.5
    assert res.iqr_s == pytest.approx(4.75 - 1.75)  # inclusive quartiles of 1, 2, 3, 10
    assert res.mad_s == 1.0  # |1-2.5|, |2-2.5|, |3-2.5|, |10-2.5| -> median 1.0
    assert res.min_s == 1.0


def test_quick_uses_quick_repeats_and_warmup_memory_call():
    calls: list = []
    r = harness.Registry()
    r.workload("w", repeats=5, warmup=2, quick_repeats=2, quick_warmup=1)(_sleeper(0.0, calls=calls))
    (res,) = harness.run_all(r, quick=True, log=lambda m: None)
    assert res.repeats == 2 and len(calls) == 3 and all(calls)


def test_skip_error_and_unknown(reg):
    def skipping(quick):
        raise harness.SkipWorkload("module b2bkg.nothing is not available")

    def broken(quick):
        def run():
            raise RuntimeError("boom")

        return run

    reg.workload("skip", baseline="base")(skipping)
    reg.workload("broken", baseline="base")(broken)
    results = {r.name: r for r in harness.run_all(reg, only=["skip", "broken"], log=lambda m: None)}
    assert results["skip"].status == "skipped" and "not available" in results["skip"].message
    assert results["broken"].status == "error" and "boom" in results["broken"].message
    assert results["skip"].ratio is None
    table = harness.format_table(list(results.values()))
    assert "SKIPPED" in table and "ERROR" in table
    with pytest.raises(KeyError, match="no such workload"):
        harness.resolve(reg, ["nope"])
    with pytest.raises(ValueError, match="registered twice"):
        reg.workload("base")(_sleeper(0.0))


def test_baseline_cycle_and_missing_baseline():
    r = harness.Registry()
    r.workload("a", baseline="b")(_sleeper(0.0))
    r.workload("b", baseline="a")(_sleeper(0.0))
    with pytest.raises(ValueError, match="cycle"):
        harness.resolve(r, ["a"])
    r2 = harness.Registry()
    r2.workload("c", baseline="missing")(_sleeper(0.0))
    with pytest.raises(KeyError, match="not registered"):
        harness.resolve(r2, None)


def test_target_semantics():
    t = harness.Target(min_rate=10, reference="x")
    assert t.met(rate=12, time_s=1 / 12, ratio=None) is True
    assert t.met(rate=5, time_s=0.2, ratio=None) is False
    assert harness.Target(reference="only text").met(1, 1, 1) is None
    assert harness.Target(max_time_s=2).met(rate=1, time_s=1, ratio=None) is True
    assert ">= 10 events/s" in t.describe("event")


def test_memory_tracks_numpy_allocation():
    np = pytest.importorskip("numpy")
    r = harness.Registry()

    def setup(quick):
        def run():
            a = np.ones(4 * 2**20)  # 32 MB, touched
            return 1 if a.sum() > 0 else 0

        return run

    r.workload("alloc", repeats=1)(setup)
    (res,) = harness.run_all(r, log=lambda m: None)
    assert res.status == "ok"
    assert res.peak_traced_mb >= 30
    if res.memory_method == "vmhwm-reset":
        assert res.peak_rss_mb >= 25


def test_json_roundtrip(reg, tmp_path):
    results = harness.run_all(reg, log=lambda m: None)
    out = tmp_path / "b.json"
    harness.write_json(harness.to_json(results, harness.environment(1)), out)
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["results"]] == ["base", "fast"]
    assert data["meta"]["threads"] == 1
    assert {"median_s", "iqr_s", "ratio", "peak_rss_mb", "target"} <= set(data["results"][1])


def test_run_py_lists_registered_workloads(capsys, monkeypatch):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(sys, "path", list(sys.path))
    run = _load("b2bkg_bench_run", ROOT / "benchmarks" / "run.py")
    assert run.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "pxd-wgan-paper (baseline)" in out
    assert "pxd-truth-sim (baseline: pxd-wgan-paper)" in out
