"""Filtering: importance sampling and threshold, reproducibility, blindness to the emulator's labels."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from b2bkg.core.errors import ConfigError
from b2bkg.io import FileWriter, open_file, read_smc
from b2bkg.io.events import SmcEvents
from b2bkg.selmc.simulate import iter_smc_chunks
from b2bkg.selmc.weighting import FilterConfig, event_uniforms, filter_file, filter_weights, keep_probability, select_events
from b2bkg.training import train

N = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("filt")
    ev = next(iter_smc_chunks(N, 9, sample="mixed", chunk_size=N, oracle_repeats=2))
    full = d / "in.h5"
    with FileWriter(full, seed=9) as w:
        w.append(smc=ev)
    # the same events without any emulator output (no passed_*, pass_prob_*, mbc_*, ...)
    bare = d / "bare.h5"
    with FileWriter(bare, seed=9) as w:
        w.append(smc=SmcEvents(ev.offsets, ev.particles, {"event_id": ev.per_event["event_id"]}))
    run = train("smc-nn", full, d / "run", seed=2,
                overrides=["max_steps=2", "batch_size=16", "channels=8", "emb_dim=4", "hidden=8", "n_layers=1", "arch=conv"])
    return ev, full, bare, run


def test_keep_probability():
    s = np.array([0.0, 0.005, 0.3, 1.0])
    np.testing.assert_allclose(keep_probability(s, FilterConfig(p_min=0.01, scale=1.0, power=1.0)), [0.01, 0.01, 0.3, 1.0])
    # default: the cost-optimal p = clip(1.5 sqrt(q), p_min, 1)
    np.testing.assert_allclose(keep_probability(s, FilterConfig(p_min=0.01)), [0.01, 1.5 * np.sqrt(0.005), 1.5 * np.sqrt(0.3), 1.0])
    np.testing.assert_allclose(keep_probability(s, FilterConfig(p_min=0.05, scale=2.0, power=0.5)), [0.05, 2 * np.sqrt(0.005), 1.0, 1.0])
    np.testing.assert_array_equal(keep_probability(s, FilterConfig(mode="threshold", threshold=0.3)), [0, 0, 1, 1])
    with pytest.raises(ConfigError, match="--mode"):
        FilterConfig(mode="cut")
    with pytest.raises(ConfigError, match="p_min"):
        FilterConfig(p_min=0.0)


def test_importance_sampling_is_unbiased():
    rng = np.random.default_rng(0)
    score = rng.random((20000, 2)) ** 3
    w = filter_weights(score, np.arange(20000), FilterConfig(p_min=0.02), seed=4)
    assert w.max() <= 1 / 0.02 + 1e-3
    # E[sum w] = N for every skim; nested keeps: a shared uniform per event
    np.testing.assert_allclose(w.sum(0), 20000, rtol=0.05)
    p = keep_probability(score, FilterConfig(p_min=0.02))
    both = (p[:, 0] <= p[:, 1])
    assert np.all((w[both, 0] > 0) <= (w[both, 1] > 0))


def test_uniforms_per_event():
    u = event_uniforms(np.array([5, 7, 5]), seed=1)
    assert u[0] == u[2] != u[1]
    assert not np.array_equal(event_uniforms(np.array([5]), 1), event_uniforms(np.array([5]), 2))


def test_select_events(setup):
    ev = setup[0]
    w = np.zeros((N, 1), np.float32)
    w[[3, 10], 0] = [2.0, 1.0]
    out = select_events(ev, w, ["fei_b0"])
    assert out.n_events == 2 and out.per_event["weight_fei_b0"].tolist() == [2.0, 1.0]
    assert out.per_event["event_id"].tolist() == ev.per_event["event_id"][[3, 10]].tolist()
    np.testing.assert_array_equal(out.event(1)["pdg"], ev.event(10)["pdg"])


def test_filter_file_ignores_labels_and_is_reproducible(setup, tmp_path):
    ev, full, bare, run = setup
    cfg = FilterConfig(p_min=0.2, scale=1.0, power=1.0)  # the seed's identity map: keeps ~half of the untrained net's events
    r1 = filter_file(run, full, tmp_path / "a.h5", cfg=cfg, seed=3, chunk=N)
    r2 = filter_file(run, bare, tmp_path / "b.h5", cfg=cfg, seed=3, chunk=17)  # no labels, other chunking
    a, b = read_smc(tmp_path / "a.h5"), read_smc(tmp_path / "b.h5")
    assert r1["n_kept"] == r2["n_kept"] == a.n_events > 0
    np.testing.assert_array_equal(a.per_event["event_id"], b.per_event["event_id"])
    for k in ("weight_fei_b0", "weight_fei_bplus"):  # scores depend on the batch padding at the 1e-7 level
        np.testing.assert_allclose(a.per_event[k], b.per_event[k], rtol=1e-5)
    np.testing.assert_array_equal(a.particles["pdg"], b.particles["pdg"])
    assert "passed_fei_b0" in a.per_event and "passed_fei_b0" not in b.per_event  # copied through, never needed
    with open_file(tmp_path / "a.h5") as f:
        assert int(f.meta["n_input_events"]) == N and f.meta["filter_mode"] == "sample"
    w = a.per_event["weight_fei_b0"]
    assert ((w == 0) | ((w >= 1) & (w <= 5 + 1e-4))).all()
    filter_file(run, full, tmp_path / "c.h5", cfg=cfg, seed=4, chunk=N)
    c = read_smc(tmp_path / "c.h5")
    assert c.n_events != a.n_events or not np.array_equal(c.per_event["event_id"], a.per_event["event_id"])


def test_filter_threshold_and_skim(setup, tmp_path):
    ev, full, bare, run = setup
    r = filter_file(run, full, tmp_path / "t.h5", cfg=FilterConfig(mode="threshold", threshold=0.0), skims=["fei_b0"], seed=1)
    out = read_smc(tmp_path / "t.h5")
    assert r["n_kept"] == N and "weight_fei_bplus" not in out.per_event and (out.per_event["weight_fei_b0"] == 1).all()
    with pytest.raises(ConfigError, match="--skim"):
        filter_file(run, full, tmp_path / "x.h5", skims=["fei_d0"])


def test_cli_filter(setup, tmp_path):
    from b2bkg.cli.main import cli

    ev, full, bare, run = setup
    res = CliRunner().invoke(cli, ["-q", "filter", "--model", str(run), "--in", str(full), "--out", str(tmp_path / "o.h5"),
                                   "--p-min", "0.5", "--seed", "3", "--skim", "fei_b0"])
    assert res.exit_code == 0, res.output
    assert "kept" in res.output and read_smc(tmp_path / "o.h5").n_events >= N // 2 - 10
    from b2bkg.cli.main import main

    with pytest.raises(SystemExit) as exc:  # the real entry point: one-line error, exit code 2
        main(["filter", "--model", str(tmp_path), "--in", str(full), "--out", str(tmp_path / "p.h5")])
    assert exc.value.code == 2


def test_study_end_to_end(setup, tmp_path):
    """The study behind the README tables runs on tiny files and writes its metrics and plots."""
    import json

    from b2bkg.selmc.speedup import compare_architectures, selmc_study

    ev, full, bare, run = setup
    m = selmc_study(run, full, full, tmp_path / "study", p_mins=(0.1, 0.5), thresholds=(0.1,), n_bins=3)
    assert (tmp_path / "study" / "speedup.png").is_file() and (tmp_path / "study" / "distributions.png").is_file()
    saved = json.loads((tmp_path / "study" / "metrics.json").read_text())
    assert saved["n_test"] == N and len(saved["sample"]) == 2 and "oracle_speedup" in saved["sample"][0]
    assert m["sample"][0]["max_weight_kept"] <= 10 + 1e-6
    rows = compare_architectures({"conv": run}, ev, n_cost_events=16)
    assert [r["arch"] for r in rows] == ["conv", "oracle (pass_prob)"] and rows[0]["ms_per_event"] > 0
