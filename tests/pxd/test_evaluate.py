"""evaluate_pxd writes metrics.json (strict JSON, documented layout) and every plot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import PxdDigits
from b2bkg.pxd.evaluate import METRICS_SCHEMA, PLOTS, evaluate_pxd, format_metrics
from b2bkg.pxd.metrics import DISTANCES


def small_pxd(seed: int, n_events: int = 5, n_clusters: int = 400, charge_scale: float = 1.0) -> PxdDigits:
    """Random 1-2 pixel clusters (pixels unique per event)."""
    rng = np.random.default_rng(seed)
    events = []
    for _ in range(n_events):
        s, u, v = rng.integers(0, 40, n_clusters), rng.integers(0, 249, n_clusters), rng.integers(0, 768, n_clusters)
        two = rng.random(n_clusters) < 0.5
        s, u, v = np.r_[s, s[two]], np.r_[u, u[two] + 1], np.r_[v, v[two]]
        key = np.unique((s * 250 + u) * 768 + v)
        q = np.clip(np.rint((7 + rng.gamma(1.5, 10, len(key))) * charge_scale), 1, 255)
        events.append({"sensor": key // (250 * 768), "ucell": key // 768 % 250, "vcell": key % 768, "charge": q})
    return PxdDigits.from_events(events)


def test_writes_metrics_and_plots(tmp_path):
    t, g, t2 = small_pxd(1), small_pxd(2, charge_scale=1.2), small_pxd(3)
    m = evaluate_pxd(t, g, tmp_path / "ev", truth2=t2, seed=4, n_boot=5, labels=("sim", "gan"))
    out = tmp_path / "ev"
    for p in PLOTS:
        assert (out / p).stat().st_size > 1000, p
    on_disk = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert on_disk == m
    assert m["schema"] == METRICS_SCHEMA
    assert m["labels"] == {"truth": "sim", "generated": "gan"}
    assert m["n_events"] == {"truth": 5, "generated": 5, "truth2": 5, "floor": 5}
    assert set(m["distances"]) == set(DISTANCES)
    for d in m["distances"].values():
        assert {"value", "err", "floor", "floor_err", "unit", "description"} <= set(d)
    assert m["distances"]["w1_charge"]["value"] > 3 * m["distances"]["w1_charge"]["floor"]
    assert set(m["summary"]) == {"truth", "generated", "truth2"}
    assert m["summary"]["truth"]["n_events"] == 5
    assert 0 < m["summary"]["truth"]["cluster_size1_frac"] < 1
    assert len(m["per_sensor"]["occupancy_pct"]["generated"]) == 40
    assert not list(out.glob(".*tmp*")), "temporary files left behind"
    text = format_metrics(m)
    assert "w1_charge" in text and "floor" in text and "cluster_size_mean" in text and "sim" in text


def test_without_floor_and_identical(tmp_path):
    t = small_pxd(5, n_events=3, n_clusters=100)
    m = evaluate_pxd(t, t, tmp_path, n_boot=3, plots=False)
    assert m["plots"] == [] and not list(tmp_path.glob("*.png"))
    assert m["n_events"]["truth2"] is None
    for k, d in m["distances"].items():
        assert "floor" not in d
        assert d["value"] == pytest.approx(0.0, abs=1e-9), k
    assert "floor" not in format_metrics(m).splitlines()[0]


def test_deterministic(tmp_path):
    t, g = small_pxd(6, 4, 100), small_pxd(7, 4, 100)
    a = evaluate_pxd(t, g, tmp_path / "a", n_boot=4, seed=9, plots=False)
    b = evaluate_pxd(t, g, tmp_path / "b", n_boot=4, seed=9, plots=False)
    assert a == b


def test_errors(tmp_path):
    t = small_pxd(8, 2, 50)
    with pytest.raises(ConfigError, match="generated sample has no events"):
        evaluate_pxd(t, PxdDigits.empty(0), tmp_path)
    with pytest.raises(ConfigError, match="display_sensors"):
        evaluate_pxd(t, t, tmp_path, display_sensors=(0, 40))
    with pytest.raises(ConfigError, match="labels"):
        evaluate_pxd(t, t, tmp_path, labels=("a",))


def test_diversity_check_with_the_training_sample(tmp_path):
    """``train=``: a generator that replays its training events sits at distance 0 from it; truth does not."""
    train, truth = small_pxd(10, 4, 200), small_pxd(11, 4, 200)
    m = evaluate_pxd(truth, train, tmp_path, n_boot=0, plots=False, train=train)
    d = m["diversity"]
    assert d["nn_train_gen"] == pytest.approx(0.0, abs=1e-6)
    assert d["nn_train_truth"] > 0.5
    assert "nearest training image" in format_metrics(m)
    assert "diversity" not in evaluate_pxd(truth, train, tmp_path / "b", n_boot=0, plots=False)


def test_cli_train_option_is_pxd_only(tmp_path):
    from b2bkg.evaluate import evaluate_files
    from b2bkg.io import FileWriter

    with FileWriter(tmp_path / "t.h5", seed=1) as w:
        w.append(pxd=small_pxd(12, 2, 50))
    m = evaluate_files(tmp_path / "t.h5", tmp_path / "t.h5", tmp_path / "ev", train=tmp_path / "t.h5")
    assert m["diversity"]["nn_train_gen"] == pytest.approx(0.0, abs=1e-6)


def test_evaluate_flags_truth_files_from_different_simulators(tmp_path):
    """Truth and floor written by different simulator versions: a warning in the metrics and on
    stderr from the CLI, and both hashes in provenance.json; same hash: no warning."""
    from click.testing import CliRunner

    from b2bkg.cli.main import cli
    from b2bkg.evaluate import evaluate_files
    from b2bkg.io import FileWriter

    for name, h in (("a.h5", "aaaa"), ("b.h5", "bbbb"), ("c.h5", "aaaa")):
        with FileWriter(tmp_path / name, seed=1, attrs={"simulator_hash": h}) as w:
            w.append(pxd=small_pxd(12, 2, 50))
    same = evaluate_files(tmp_path / "a.h5", tmp_path / "a.h5", tmp_path / "s", truth2=tmp_path / "c.h5")
    assert same["warnings"] == []
    diff = evaluate_files(tmp_path / "a.h5", tmp_path / "a.h5", tmp_path / "d", truth2=tmp_path / "b.h5")
    assert len(diff["warnings"]) == 1 and "aaaa" in diff["warnings"][0] and "bbbb" in diff["warnings"][0]
    prov = json.loads((tmp_path / "d" / "provenance.json").read_text())
    assert prov["simulator_hash"] == {"truth": "aaaa", "truth2": "bbbb"}
    res = CliRunner().invoke(cli, ["evaluate", "--truth", str(tmp_path / "a.h5"), "--generated", str(tmp_path / "a.h5"),
                                   "--truth2", str(tmp_path / "b.h5"), "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    assert "different simulator versions" in res.output
