"""The self-contained HTML report (b2bkg.report.html, ``b2bkg report``)."""

from __future__ import annotations

import base64
import json
import re

import pytest
import yaml

from b2bkg.core.errors import ConfigError
from b2bkg.report.html import build_report, detect_pillar, discover, flatten_metrics


def _png(path, color):
    """A small real PNG drawn with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1], color=color)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path.read_bytes()


@pytest.fixture
def eval_dir(tmp_path):
    d = tmp_path / "eval_pxd"
    d.mkdir()
    metrics = {
        "schema": "b2bkg.pxd.metrics/1",
        "seed": 17,
        "n_events": {"truth": 50, "generated": 40},
        "distances": {
            "w1_charge": {"value": 1.2345, "err": 0.0567, "floor": 0.3141, "floor_err": 0.02, "unit": "ADU",
                          "description": "Wasserstein-1 of fired-pixel charge"},
        },
        "summary": {"generated": {"occupancy_pct": 0.8765, "occupancy_pct_err": 0.0123}},
        "per_sensor": {"occupancy_rel_err": [0.01 * i for i in range(40)]},
        "plots": ["charge.png"],
    }
    (d / "metrics.json").write_text(json.dumps(metrics))
    png = _png(d / "charge.png", "red")
    return d, png


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "runs" / "ecl_run"
    d.mkdir(parents=True)
    cfg = {"model": "ecl-gan", "seed": 5, "version": "0.1.0", "git": "abc1234", "data": "train.h5",
           "config": {"lr": 1e-4, "batch": 64}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "log.csv").write_text("step,time_s,loss_d,loss_g\n" + "".join(f"{s},{s * 0.1},{1 / s},{2 - 1 / s}\n" for s in range(1, 30)))
    (d / "val.csv").write_text("step,ks2\n10,0.5\n20,0.3\n")
    (d / "meta.json").write_text(json.dumps({"model": "ecl-gan", "status": "complete", "step": 29, "seed": 5}))
    (d / "checkpoint").mkdir()
    (d / "checkpoint" / "latest.json").write_text("{}")
    return d


def test_report_embeds_image_table_and_no_remote_resources(tmp_path, eval_dir, run_dir):
    ev, png = eval_dir
    out = build_report([ev, run_dir], tmp_path / "out" / "report.html", title="unit test")
    text = out.read_text()
    # the evaluation's PNG, byte for byte, as a data URI
    assert "data:image/png;base64," + base64.b64encode(png).decode() in text
    # metric table: value ± err, floor ± err, unit; merged x / x_err siblings; summarized list
    assert "distances.w1_charge" in text and "1.234 ± 0.0567" in text and "0.3141 ± 0.02" in text and "ADU" in text
    assert "summary.generated.occupancy_pct" in text and "0.8765 ± 0.0123" in text
    assert "40 values: mean 0.195" in text
    # sections per pillar, provenance (seeds, config)
    assert '<h2 id="pxd">PXD background</h2>' in text and '<h2 id="ecl">ECL background</h2>' in text
    assert text.index('id="pxd"') < text.index('id="ecl"')
    assert "abc1234" in text and "ecl-gan" in text and "17" in text
    # the run's loss and validation plots are drawn and embedded: 1 eval PNG + 2 run plots
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 3
    assert "training losses from log.csv (29 rows)" in text
    # self-contained: no remote resources, no scripts
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', text, re.I)
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text
    assert not list(out.parent.glob(".*tmp*"))  # atomic write left nothing behind


def test_folder_search_and_errors(tmp_path, eval_dir, run_dir):
    entries = discover([tmp_path])
    assert sorted(e.path.name for e in entries) == ["ecl_run", "eval_pxd"]  # checkpoint/ is not a run
    with pytest.raises(ConfigError, match="no such file"):
        build_report([tmp_path / "missing"], tmp_path / "r.html")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no evaluation folder"):
        build_report([empty], tmp_path / "r.html")
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="not a benchmark result"):
        build_report([bad], tmp_path / "r.html")


def test_broken_metrics_json_is_reported_not_fatal(tmp_path):
    d = tmp_path / "ev"
    d.mkdir()
    (d / "metrics.json").write_text("{not json")
    text = build_report([d], tmp_path / "r.html").read_text()
    assert "metrics.json: unreadable" in text


def test_pillar_detection():
    assert detect_pillar({"pillar": "SMC"}) == "smc"
    assert detect_pillar({"schema": "b2bkg.pxd.metrics/1"}) == "pxd"
    assert detect_pillar(None, {"model": "ecl-ae"}) == "ecl"
    assert detect_pillar(None, None, {"model": "smc-nn"}) == "smc"
    assert detect_pillar({"x": 1}, {"model": "toy-gan"}) == "other"


def test_flatten_metrics_rows():
    rows = {r.name: r for r in flatten_metrics({"a": {"b": {"value": 2.0, "err": 0.5}, "c": 3}, "d": [1, 2], "plots": ["x.png"]})}
    assert set(rows) == {"a.b", "a.c", "d"}
    assert rows["a.b"].value == 2.0 and rows["a.b"].err == 0.5
    assert rows["d"].value == "[1, 2]"


def test_benchmark_json_section(tmp_path):
    bench = {"meta": {"cpu": "test cpu", "threads": 1}, "results": [
        {"name": "pxd-wgan-paper", "unit": "event", "status": "ok", "median_s": 9.5, "iqr_s": 0.2, "baseline": None,
         "ratio": 1.0, "peak_rss_mb": 300.0, "target": "ref 7.7-10.4 s/event", "target_met": None},
        {"name": "pxd-truth-sim", "unit": "event", "status": "skipped", "message": "not available", "baseline": "pxd-wgan-paper"},
    ]}
    f = tmp_path / "bench.json"
    f.write_text(json.dumps(bench))
    text = build_report([f], tmp_path / "r.html").read_text()
    assert "Benchmarks" in text and "9.5 s/event" in text and "SKIPPED" in text and "test cpu" in text


def test_cli_report(tmp_path, eval_dir):
    from click.testing import CliRunner

    from b2bkg.cli.main import cli

    ev, _ = eval_dir
    out = tmp_path / "cli.html"
    res = CliRunner().invoke(cli, ["report", str(ev), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "wrote" in res.output


def test_samples_compared_side_by_side(tmp_path):
    d = tmp_path / "ev"
    d.mkdir()
    summary = {"truth": {"occupancy_pct": 0.9, "hits": 100}, "generated": {"occupancy_pct": 0.7, "hits": 80}}
    (d / "metrics.json").write_text(json.dumps({"pillar": "pxd", "labels": {"generated": "wgan"}, "summary": summary}))
    text = build_report([d], tmp_path / "r.html").read_text()
    assert "<th>summary</th><th>truth</th><th>wgan</th>" in text
    assert "<tr><td>occupancy_pct</td><td>0.9</td><td>0.7</td></tr>" in text
