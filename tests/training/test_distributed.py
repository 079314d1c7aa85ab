"""The trainer under torchrun: 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from b2bkg.training.toy import make_toy_data


@pytest.mark.distributed
def test_torchrun_two_cpu_processes(tmp_path):
    make_toy_data(tmp_path / "train.npy", 1000, seed=1)
    make_toy_data(tmp_path / "val.npy", 300, seed=2)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "b2bkg.cli.main", "--quiet", "train", "toy-gan", "--data", str(tmp_path / "train.npy"),
           "--val", str(tmp_path / "val.npy"), "--out", str(out), "--seed", "2",
           "--set", "max_steps=20", "--set", "val_every=10", "--set", "log_every=5", "--set", "val_events=300",
           "--set", "checkpoint_every=10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    # only rank 0 reports and writes; the trainer checks at the end that both ranks hold identical weights
    assert res.stdout.count("run folder:") == 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["world_size"] == 2 and meta["step"] == 20
    assert "world_size: 2" in (out / "config.yaml").read_text()
    assert [line.split(",")[0] for line in (out / "log.csv").read_text().split()[1:]] == ["5", "10", "15", "20"]
    assert (out / "best.json").is_file() and len((out / "val.csv").read_text().split()) == 3
    w = load_file(str(out / "weights.safetensors"))
    assert all(t.isfinite().all() for t in w.values())
    assert not list(out.rglob("*.tmp"))
