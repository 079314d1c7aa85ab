"""The shared trainer, end to end on the toy-gan family (and a tiny fit-only family)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from b2bkg.core.errors import ConfigError, ModelError
from b2bkg.training import ArrayBatches, Family, TrainConfig, get_family, known_families, register, train
from b2bkg.training.checkpoint import load_modules
from b2bkg.training.toy import NpyWriter, ks_statistic, make_toy_data
from b2bkg.training.trainer import derived_seed, lr_factor

FAST = ["log_every=5", "val_events=1000", "lr=0.005", "ema_decay=0.8"]




@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    make_toy_data(d / "train.npy", 2000, seed=1)
    make_toy_data(d / "val.npy", 1000, seed=2)
    return d / "train.npy", d / "val.npy"


def _weights(path):
    return load_file(str(path))


def _assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- unit pieces ---------------------------------------------------------------------------------


def test_lr_schedules():
    c = TrainConfig(max_steps=100)
    assert [lr_factor(c, s) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    lin = TrainConfig(max_steps=100, lr_schedule="linear", lr_decay_start=0.5)
    assert lr_factor(lin, 49) == 1.0
    assert lr_factor(lin, 50) == 1.0
    assert lr_factor(lin, 75) == pytest.approx(0.5)
    assert lr_factor(lin, 100) == pytest.approx(0.0)
    wgan = TrainConfig(max_steps=10, lr_schedule="linear", lr_final_factor=0.1)  # WGAN-GP: decay from step 0
    assert lr_factor(wgan, 5) == pytest.approx(1 - 0.9 * 0.5)
    warm = TrainConfig(max_steps=100, lr_warmup_steps=4)
    assert [lr_factor(warm, s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_array_batches_shards_and_resumes():
    x = np.arange(20, dtype=np.float32)
    one = ArrayBatches(x, batch_size=6, seed=3)
    r0, r1 = ArrayBatches(x, 6, seed=3, rank=0, world_size=2), ArrayBatches(x, 6, seed=3, rank=1, world_size=2)
    for _ in range(7):  # crosses epochs (3 batches/epoch, last 2 rows dropped)
        full = one.next()
        a, b = r0.next(), r1.next()
        assert len(a) == len(b) == 3
        assert sorted(torch.cat([a, b]).tolist()) == sorted(full.tolist())
    state = one.state_dict()
    assert state["epoch"] == 2
    nxt = [one.next() for _ in range(4)]
    one.load_state_dict(state)
    assert all(torch.equal(one.next(), n) for n in nxt)
    # each epoch visits distinct rows in a new order
    e = ArrayBatches(x, 5, seed=3)
    ep0 = torch.cat([e.next() for _ in range(4)])
    ep1 = torch.cat([e.next() for _ in range(4)])
    assert sorted(ep0.tolist()) == sorted(ep1.tolist()) == list(range(20))
    # transform: event indices -> batch (how sparse data becomes dense images)
    t = ArrayBatches(np.arange(20), 4, seed=3, transform=lambda idx: {"idx": idx, "sq": idx.double() ** 2})
    b = t.next()
    assert b["idx"].dtype == torch.int64 and torch.equal(b["sq"], b["idx"].double() ** 2)
    with pytest.raises(ConfigError, match="not divisible"):
        ArrayBatches(x, 5, seed=1, world_size=2)
    with pytest.raises(ConfigError, match="larger than the training sample"):
        ArrayBatches(x, 64, seed=1)


# -- training end to end -------------------------------------------------------------------------


def test_training_improves_ks_and_keeps_best(toy_files, tmp_path):
    train_f, val_f = toy_files
    out = tmp_path / "run"
    train("toy-gan", train_f, out, val=val_f, seed=1, overrides=["max_steps=200", "val_every=40", "checkpoint_every=100", *FAST])
    for name in ("config.yaml", "weights.safetensors", "best.safetensors", "best.json", "log.csv", "val.csv", "meta.json",
                 "checkpoint/latest.json"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["step"] == 200

    # KS of the untrained generator (same init seed) vs the best checkpoint
    fam = get_family("toy-gan")
    from b2bkg.generate import load_run

    run = load_run(out, weights="best")
    torch.manual_seed(derived_seed(1, "train.init"))
    untrained = fam.build(run.cfg)
    val = np.load(val_f)
    ks0 = fam.validate(untrained, run.cfg, val, seed=5)["ks"]

    rows = [line.split(",") for line in (out / "val.csv").read_text().split()[1:]]
    steps, ks = [int(r[0]) for r in rows], [float(r[1]) for r in rows]
    assert steps == [40, 80, 120, 160, 200]
    best = json.loads((out / "best.json").read_text())
    assert best["metric"] == "ks" and best["step"] == steps[int(np.argmin(ks))] and best["value"] == min(ks)
    assert best["value"] < 0.6 * ks0, (ks0, ks)
    # best.safetensors holds exactly the weights validated at that step: re-validating reproduces the value
    again = fam.validate(run.modules, run.cfg, val, derived_seed(1, "train.validate", best["step"]))["ks"]
    assert again == pytest.approx(best["value"], abs=1e-12)
    # the log has the family's losses
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert {"step", "lr_factor", "wdist", "gp", "g_loss"} <= set(header)


def test_resume_after_sigkill_is_bitwise_identical(toy_files, tmp_path):
    train_f, val_f = toy_files
    common = ["max_steps=40", "checkpoint_every=10", "val_every=10", *FAST]
    ref = tmp_path / "ref"
    train("toy-gan", train_f, ref, val=val_f, seed=3, overrides=common)

    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "B2BKG_QUIET": "1"}
    args = [sys.executable, "-m", "b2bkg.cli.main", "--quiet", "train", "toy-gan", "--data", str(train_f), "--val", str(val_f),
            "--out", str(run), "--seed", "3"]
    for o in [*common, "sleep_s=0.1"]:
        args += ["--set", o]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = run / "checkpoint" / "latest.json"
    deadline = time.time() + 60
    try:
        while time.time() < deadline:
            if latest.is_file() and json.loads(latest.read_text())["step"] >= 10:
                break
            if proc.poll() is not None:
                pytest.fail(f"training subprocess ended early: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = json.loads(latest.read_text())["step"]
    assert killed_at < 40 and not (run / "weights.safetensors").exists()

    train("toy-gan", train_f, run, val=val_f, resume=True, overrides=["sleep_s=0"])
    _assert_same_tensors(_weights(ref / "weights.safetensors"), _weights(run / "weights.safetensors"))
    _assert_same_tensors(_weights(ref / "best.safetensors"), _weights(run / "best.safetensors"))
    # optimizer state, step and data position too
    sa = torch.load(ref / "checkpoint" / "step-00000040.pt", weights_only=True)
    sb = torch.load(run / "checkpoint" / "step-00000040.pt", weights_only=True)
    assert sa["data"] == sb["data"] and sa["step"] == sb["step"] == 40
    for k in sa["optimizers"]:
        for pid, st in sa["optimizers"][k]["state"].items():
            assert torch.equal(st["exp_avg"], sb["optimizers"][k]["state"][pid]["exp_avg"])
    # logs cut back to the checkpoint, then continued: same steps as the uninterrupted run
    def steps(p):
        return [line.split(",")[0] for line in p.read_text().split()[1:]]

    assert steps(run / "log.csv") == steps(ref / "log.csv")
    assert (run / "val.csv").read_text() == (ref / "val.csv").read_text()


def test_run_folder_loads_without_code(toy_files, tmp_path):
    train_f, _ = toy_files
    out = train("toy-gan", train_f, tmp_path / "r", seed=0, overrides=["max_steps=5", *FAST])
    stem = json.loads((out / "checkpoint" / "latest.json").read_text())["stem"]
    state = torch.load(out / "checkpoint" / f"{stem}.pt", weights_only=True)
    assert state["step"] == 5 and set(state["optimizers"]) == {"generator", "critic"}
    w = _weights(out / "weights.safetensors")
    assert any(k.startswith("generator.") for k in w) and any(k.startswith("critic.") for k in w)
    # no validation data -> no best checkpoint
    assert not (out / "best.safetensors").exists()
    # a corrupt weights file is a one-line ModelError
    (out / "weights.safetensors").write_bytes(b"not safetensors")
    fam = get_family("toy-gan")
    from b2bkg.generate import load_run

    with pytest.raises(ModelError, match="safetensors"):
        load_run(out, weights="final")
    assert fam.name == "toy-gan"


def test_errors_are_one_line(toy_files, tmp_path, capsys):
    train_f, _ = toy_files
    from b2bkg.cli.main import main

    def run_cli(*argv):
        with pytest.raises(SystemExit) as e:
            main(["--quiet", *argv])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1, err
        return err

    assert "toy-gan" in run_cli("train", "no-such-model", "--data", str(train_f), "--out", str(tmp_path / "a"))
    err = run_cli("train", "toy-gan", "--data", str(train_f), "--out", str(tmp_path / "a"), "--set", "max_stepz=3")
    assert "max_stepz" in err and "max_steps" in err
    assert "not found" in run_cli("train", "toy-gan", "--data", str(tmp_path / "none.npy"), "--out", str(tmp_path / "a"))
    assert "no such preset" in run_cli("train", "toy-gan", "--data", str(train_f), "--out", str(tmp_path / "a"), "--config", "huge")
    assert "holds no run" in run_cli("train", "toy-gan", "--data", str(train_f), "--out", str(tmp_path / "a"), "--resume")
    out = tmp_path / "b"
    main(["--quiet", "train", "toy-gan", "--data", str(train_f), "--out", str(out), "--set", "max_steps=2", "--set", "batch_size=32"])
    capsys.readouterr()
    assert "already holds a run" in run_cli("train", "toy-gan", "--data", str(train_f), "--out", str(out))
    assert "seed" in run_cli("train", "toy-gan", "--data", str(train_f), "--out", str(out), "--resume", "--seed", "9")
    with pytest.raises(ConfigError, match="gp_lambda"):
        train("toy-gan", train_f, tmp_path / "c", overrides=["gp_lambda=-1"])
    with pytest.raises(ConfigError, match="ema_modules"):
        train("toy-gan", train_f, tmp_path / "d", overrides=["ema_modules=[gen]", "ema_decay=0.5"])
    assert "toy-gan" in known_families()


def test_resume_extends_a_finished_run(toy_files, tmp_path):
    """--resume with a larger max_steps continues; equal to training that long from the start
    (with a constant schedule, which does not depend on max_steps)."""
    train_f, _ = toy_files
    base = ["lr_schedule=constant", "checkpoint_every=50", *FAST]
    a = train("toy-gan", train_f, tmp_path / "a", seed=4, overrides=["max_steps=6", *base])
    train("toy-gan", train_f, a, resume=True, overrides=["max_steps=12"])
    b = train("toy-gan", train_f, tmp_path / "b", seed=4, overrides=["max_steps=12", *base])
    _assert_same_tensors(_weights(a / "weights.safetensors"), _weights(b / "weights.safetensors"))


# -- a fit-only family (no optimizer): same run folder ------------------------------------------


@dataclass(frozen=True)
class _FitConfig(TrainConfig):
    n_bins: int = 8


class _Hist(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("edges", torch.zeros(0))  # shape depends on the data: resized on load
        self.register_buffer("cdf", torch.zeros(0))


class _FitHist(Family):
    config_cls = _FitConfig
    outputs = ("x",)

    def build(self, cfg):
        return {"hist": _Hist()}

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        return np.load(path)

    def fit(self, cfg, modules, data, seed):
        counts, edges = np.histogram(data, bins=cfg.n_bins)
        h = modules["hist"]
        h.edges = torch.as_tensor(edges, dtype=torch.float64)
        h.cdf = torch.as_tensor(np.cumsum(counts) / counts.sum(), dtype=torch.float64)
        return {"n": len(data)}

    def sample(self, modules, cfg, events, seed, device, conditions=None, keep=None):
        from b2bkg.training import event_uniform

        u = event_uniform(seed, events, (1,), dtype=torch.float64)[:, 0]
        h = modules["hist"]
        i = torch.searchsorted(h.cdf, u).clamp(max=len(h.cdf) - 1)
        return {"x": ((h.edges[i] + h.edges[i + 1]) / 2).numpy()}

    def open_writer(self, path, *, seed, command, attrs):
        return NpyWriter(path, seed=seed, command=command, attrs=attrs)


@pytest.fixture
def fit_family():
    from b2bkg.training.registry import unregister

    register("test-fit-hist")(_FitHist)
    yield
    unregister("test-fit-hist")


def test_fit_family_uses_same_run_folder(toy_files, tmp_path, fit_family):
    train_f, _ = toy_files
    out = train("test-fit-hist", train_f, tmp_path / "fit", overrides=["n_bins=12"])
    assert json.loads((out / "meta.json").read_text())["fit"] == {"n": 2000.0}
    from b2bkg.generate import generate, load_run

    run = load_run(out)
    assert run.modules["hist"].edges.shape == (13,)
    x = np.load(generate(out, 3000, seed=1, out=tmp_path / "x.npy"))
    assert ks_statistic(x, np.load(train_f)) < 0.15  # bin centres of a 12-bin histogram
    w = load_file(str(out / "weights.safetensors"))
    assert set(w) == {"hist.edges", "hist.cdf"}
    mods = _FitHist().build(_FitConfig())
    load_modules(out / "weights.safetensors", mods)
    assert torch.equal(mods["hist"].cdf, run.modules["hist"].cdf)


class _PreparedToy(get_family("toy-gan").__class__):
    """The toy GAN whose ``prepare`` sets a data-dependent output bias (like an occupancy offset)."""

    def prepare(self, cfg, modules, data):
        with torch.no_grad():
            modules["generator"][-1].bias.fill_(7.0)


def test_ema_shadow_starts_from_prepared_weights(toy_files, tmp_path):
    from b2bkg.training.registry import unregister

    register("test-prepared-toy")(_PreparedToy)
    try:
        train_f, _ = toy_files
        out = train("test-prepared-toy", train_f, tmp_path / "p", overrides=["max_steps=1", "lr=1e-6", "ema_decay=0.999",
                                                                              "ema_modules=[generator]", "log_every=1"])
    finally:
        unregister("test-prepared-toy")
    w = _weights(out / "weights.safetensors")
    bias = [v for k, v in w.items() if k.startswith("generator.") and k.endswith(".bias")][-1]
    assert torch.allclose(bias, torch.full_like(bias, 7.0), atol=1e-2)  # the EMA saw the prepared bias, not the init
