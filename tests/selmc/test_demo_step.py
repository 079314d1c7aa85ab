"""The selective-MC step of demo / reproduce: validation sample and an ensemble of skim networks."""

from __future__ import annotations

import json

from b2bkg.demo import DemoContext, DemoSizes, step_smc
from b2bkg.selmc.models.family import load_run
from b2bkg.selmc.models.nets import SmcEnsemble


def test_step_trains_members_and_merges_them(tmp_path):
    sizes = DemoSizes(smc_train=300, smc_test=150, smc_val=100, smc_members=2,
                      overrides=(("smc-nn", ("max_steps=4", "val_every=2", "val_events=100", "checkpoint_every=2", "batch_size=32")),))
    ctx = DemoContext(tmp_path, 5, sizes)
    step_smc(ctx)
    runs = tmp_path / "runs"
    assert (runs / "smc-nn-member0" / "best.safetensors").is_file() and (runs / "smc-nn-member1" / "config.yaml").is_file()
    net, cfg = load_run(runs / "smc-nn")
    assert isinstance(net, SmcEnsemble) and cfg.members == 2
    merged = json.loads((runs / "smc-nn" / "merged.json").read_text())
    assert [m["run"] for m in merged["members"]] == [str(runs / "smc-nn-member0"), str(runs / "smc-nn-member1")]
    assert (tmp_path / "eval" / "smc-nn" / "metrics.json").is_file()
