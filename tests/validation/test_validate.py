"""``validate``: validation.json layout, scenarios, checks, signal files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from b2bkg.io import open_file
from b2bkg.validation.run import _checks, validate

KEYS = ("d0_pull_width", "d0_pull_width_err", "z0_pull_width", "z0_pull_width_err", "wrong_pxd_hit_fraction")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("val")
    doc = validate(out, events=2, seed=3, tracks_per_event=30, decays_per_event=3)
    return out, doc


def test_validate_writes_documented_keys(tiny_run):
    out, doc = tiny_run
    on_disk = json.loads((out / "validation.json").read_text())
    assert on_disk == doc
    for scen in ("none", "truth"):
        for b in ("pt_lt_0.2", "pt_0.2_1"):
            for k in KEYS:
                assert k in doc[scen][b]
            assert doc[scen][b]["n_tracks"] > 0
    assert "skipped" in doc["generated"] and "--pxd-model" in doc["generated"]["skipped"]
    assert set(doc["vertex"]) == {"none", "truth"}
    assert (out / "pulls.png").stat().st_size > 0 and (out / "vertex.png").stat().st_size > 0
    with open_file(out / "signal_tracks.h5") as f:
        assert f.meta["content"] == "signal" and f.n_events == 2
        assert f.read_conditions() is not None


def test_checks_logic():
    a = {"pt_lt_0.2": {"d0_pull_width": 1.0, "d0_pull_width_err": 0.03, "z0_pull_width": 1.0, "z0_pull_width_err": 0.03}}
    b = {"pt_lt_0.2": {"d0_pull_width": 1.3, "d0_pull_width_err": 0.04, "z0_pull_width": 1.1, "z0_pull_width_err": 0.04}}
    c = _checks({"none": a, "truth": b, "generated": {"skipped": "x"}})["none_narrower_than_truth_pt_lt_0.2"]
    assert c["d0"]["passed"] and np.isclose(c["d0"]["significance"], 6.0)
    assert not c["z0"]["passed"] and not c["passed"]


def test_generated_scenario_uses_the_model_background(tmp_path, monkeypatch):
    """Scenario (c) takes its digits from the model background (here a stand-in returning the
    truth simulator's events of another seed) and compares it with (b)."""
    import b2bkg.overlay.background as bg
    from b2bkg.io import PxdDigits
    from b2bkg.pxd.simulate import iter_pxd_chunks

    class FakeModel:
        groups = ("pxd",)

        def __init__(self, run_dir, seed, conditions=None, device="cpu"):
            self.run = type("R", (), {"family": type("F", (), {"name": "fake"})()})()
            self.conditions = conditions

        def read(self, group, a, b):
            return PxdDigits.concat([d for d, _ in iter_pxd_chunks(b - a, 99, start=a)])

    monkeypatch.setattr(bg, "ModelBackground", FakeModel)
    doc = validate(tmp_path, events=2, seed=3, pxd_model=tmp_path, tracks_per_event=20, vertex=False, plots=False)
    assert "skipped" not in doc["generated"] and doc["generated"]["model"]["model"] == "fake"
    assert "generated_agrees_with_truth" in doc["checks"]
    assert doc["generated"]["pt_lt_0.2"]["wrong_pxd_hit_fraction"] > doc["none"]["pt_lt_0.2"]["wrong_pxd_hit_fraction"]


def test_validate_cli(tmp_path, capsys):
    from b2bkg.cli.main import main

    main(["--quiet", "validate", "--events", "1", "--tracks-per-event", "20", "--no-vertex", "--out", str(tmp_path / "v")])
    assert "validation.json" in capsys.readouterr().out
    assert (tmp_path / "v" / "validation.json").exists()
