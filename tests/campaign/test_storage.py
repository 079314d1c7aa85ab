"""Storage accounting: contract bytes/event from simulated truth, break-even, CPU and memory per event."""

from __future__ import annotations

import json

import pytest

from b2bkg.campaign.storage import (SEED_OVERLAY_BYTES_PER_EVENT, format_storage_table, measure_contract_bytes,
                                    model_bytes, seed_bytes_per_event, storage_table)
from b2bkg.core.errors import ConfigError


def test_seed_baseline():
    assert seed_bytes_per_event("pxd") == (0.5 * SEED_OVERLAY_BYTES_PER_EVENT, False)
    assert seed_bytes_per_event("ecl") == (100e3, True)  # upper bound: all non-PXD detectors
    assert seed_bytes_per_event("smc") == (None, False)


def test_contract_bytes_of_simulated_pxd():
    """Marginal compressed bytes/event of PXD truth: the pixels of ~0.9 % occupancy (69 k fired pixels,
    6 bytes each raw = ~400 kB) compress to between 20 kB and that raw size."""
    got = measure_contract_bytes(1, seed=3, pillars=("pxd",), formats=(".h5",))
    assert set(got) == {"pxd"} and set(got["pxd"]) == {"h5"}
    assert 20e3 < got["pxd"]["h5"] < 6 * 0.03 * 40 * 250 * 768
    with pytest.raises(ConfigError):
        measure_contract_bytes(1, pillars=("svd",))
    with pytest.raises(ConfigError):
        measure_contract_bytes(0)


def test_table_for_a_pillar_model_and_a_toy(tiny_run, tiny_ecl_run):
    res = storage_table([tiny_ecl_run, tiny_run], truth_events=1, gen_events=2, seed=2)
    ecl, toy = res["models"]
    # ECL waveforms: 8736 x 31 int32 = 1.08 MB raw per event; compressed, less but not nothing
    contract = res["baselines"]["contract"]["bytes_per_event"]["ecl"]
    assert set(contract) == {"h5", "root"} and all(20e3 < b < 8736 * 31 * 4 for b in contract.values())
    assert "pxd" not in res["baselines"]["contract"]["bytes_per_event"]  # only pillars of the models simulated
    mb = model_bytes(tiny_ecl_run)
    assert ecl["model"] == "ecl-cov" and ecl["pillar"] == "ecl" and ecl["model_bytes"] == mb["bytes"] > 0
    assert mb["bytes"] == (tiny_ecl_run / mb["weights_file"]).stat().st_size + (tiny_ecl_run / "config.yaml").stat().st_size
    for name, saved in (("seed", 100e3), ("contract_h5", contract["h5"]), ("contract_root", contract["root"])):
        b = ecl["baselines"][name]
        assert b["saved_bytes_per_event"] == saved and b["upper_bound"] == (name == "seed")
        assert b["break_even_events"] == pytest.approx(mb["bytes"] / saved)
        assert b["cpu_s_per_saved_mb"] == pytest.approx(ecl["generation"]["cpu_s_per_event"] / (saved / 1e6))
    g = ecl["generation"]
    assert g["n_events"] == 2 and g["threads"] == 1 and g["cpu_s_per_event"] > 0 and g["wall_s_per_event"] > 0
    assert g["peak_rss_mb"] > 50  # a Python process with torch loaded
    # generated ECL output is the full contract waveform block: > 20 kB per event compressed
    assert g["output_bytes_per_event"] > 20e3
    assert toy["pillar"] is None and toy["baselines"] == {} and toy["generation"]["cpu_s_per_event"] > 0
    text = format_storage_table(res)
    assert "ecl-cov" in text and "toy-gan" in text and "<=100 kB" in text and "seed 002" in text
    json.dumps(res, default=str)


def test_cli_storage_json(tiny_run, tmp_path, capsys):
    from b2bkg.cli.main import main

    out = tmp_path / "s.json"
    main(["--quiet", "storage", str(tiny_run), str(tmp_path / "broken"), "--gen-events", "2", "--json", str(out)])
    text = capsys.readouterr().out
    assert "toy-gan" in text and "broken): cannot load the run folder" in text  # one bad folder: a row, not a crash
    res = json.loads(out.read_text())
    assert res["models"][0]["model"] == "toy-gan" and res["models"][0]["generation"]["n_events"] == 2
    assert "config.yaml missing" in res["models"][1]["generation"]["error"]
    with pytest.raises(SystemExit) as e:
        main(["--quiet", "storage", str(tmp_path / "nope")])
    assert e.value.code == 2 and "config.yaml missing" in capsys.readouterr().err
