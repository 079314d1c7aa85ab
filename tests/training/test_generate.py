"""b2bkg.generate: run folder -> events, deterministic and independent of batch size / shards."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from b2bkg.core.errors import ModelError
from b2bkg.generate import generate, load_run
from b2bkg.training import Family, TrainConfig, register, train
from b2bkg.training.toy import make_toy_data




@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    make_toy_data(d / "train.npy", 1000, seed=1)
    make_toy_data(d / "val.npy", 500, seed=2)
    torch.set_num_threads(1)
    return train("toy-gan", d / "train.npy", d / "run", val=d / "val.npy", seed=0,
                 overrides=["max_steps=20", "val_every=10", "log_every=5", "val_events=200"])


def test_same_seed_same_events_any_shard(toy_run, tmp_path):
    a = np.load(generate(toy_run, 100, seed=5, out=tmp_path / "a.npy", batch_size=16))
    assert a.shape == (100,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, np.load(generate(toy_run, 100, seed=5, out=tmp_path / "a2.npy", batch_size=16)))
    # shards (unaligned to the batch): events 0..36, 37..99 concatenated equal the single run
    s0 = np.load(generate(toy_run, 37, seed=5, out=tmp_path / "s0.npy", batch_size=16))
    s1 = np.load(generate(toy_run, 63, seed=5, out=tmp_path / "s1.npy", batch_size=16, start=37))
    np.testing.assert_array_equal(np.concatenate([s0, s1]), a)
    # another batch size: same random draws, network rounding only
    b = np.load(generate(toy_run, 100, seed=5, out=tmp_path / "b.npy", batch_size=7))
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    c = np.load(generate(toy_run, 100, seed=6, out=tmp_path / "c.npy", batch_size=16))
    assert np.abs(a - c).max() > 0.1
    meta = json.loads((tmp_path / "a.npy.json").read_text())
    assert meta["seed"] == 5 and meta["model"] == "toy-gan" and meta["weights"] == "best.safetensors" and meta["n_events"] == 100
    assert meta["generate_batch_size"] == 16


def test_generated_follows_the_trained_weights(toy_run, tmp_path):
    """Sampling uses the stored generator: best and final weights give different events."""
    best = np.load(generate(toy_run, 50, seed=1, out=tmp_path / "best.npy", weights="best", batch_size=50))
    final = np.load(generate(toy_run, 50, seed=1, out=tmp_path / "final.npy", weights="final", batch_size=50))
    run = load_run(toy_run, weights="final")
    from b2bkg.training.sampling import event_normal

    z = event_normal(1, np.arange(50), (run.cfg.latent_dim,))
    with torch.no_grad():
        expect = run.modules["generator"](z)[:, 0].numpy()
    np.testing.assert_array_equal(final, expect)
    best_step = json.loads((toy_run / "best.json").read_text())["step"]
    if best_step != 20:
        assert not np.array_equal(best, final)


def test_cli_generate_and_errors(toy_run, tmp_path, capsys):
    from b2bkg.cli.main import main

    out = tmp_path / "cli.npy"
    main(["--quiet", "generate", "--model", str(toy_run), "--events", "30", "--seed", "2", "--out", str(out), "--batch-size", "4"])
    np.testing.assert_array_equal(np.load(out), np.load(generate(toy_run, 30, seed=2, out=tmp_path / "lib.npy", batch_size=4)))
    capsys.readouterr()

    def err(*argv):
        with pytest.raises(SystemExit) as e:
            main(["--quiet", "generate", *argv])
        msg = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(msg.splitlines()) == 1, msg
        return msg

    assert "not a run folder" in err("--model", str(tmp_path), "--events", "3", "--seed", "1", "--out", str(out))
    assert "--events" in err("--model", str(toy_run), "--events", "0", "--seed", "1", "--out", str(out))
    assert "not conditioned" in err("--model", str(toy_run), "--events", "3", "--seed", "1", "--out", str(out),
                                    "--conditions", str(out))
    assert "--keep-from" in err("--model", str(toy_run), "--events", "3", "--seed", "1", "--out", str(out), "--keep-from", str(out))
    assert ".npy" in err("--model", str(toy_run), "--events", "3", "--seed", "1", "--out", str(tmp_path / "x.h5"))


@dataclass(frozen=True)
class _NoGenConfig(TrainConfig):
    pass


class _NoGen(Family):
    config_cls = _NoGenConfig
    cannot_generate = "it models single clusters, not events"

    def build(self, cfg):
        return {"net": torch.nn.Linear(1, 1)}

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        return None

    def fit(self, cfg, modules, data, seed):
        return {}


def test_family_that_cannot_generate(toy_run, tmp_path):
    from b2bkg.training.registry import unregister

    register("test-no-generate")(_NoGen)
    try:
        _check_cannot_generate(toy_run, tmp_path)
    finally:
        unregister("test-no-generate")


def _check_cannot_generate(toy_run, tmp_path):
    run = train("test-no-generate", toy_run / "config.yaml", tmp_path / "ng")
    with pytest.raises(ModelError, match="cannot generate events: it models single clusters"):
        generate(run, 10, seed=1, out=tmp_path / "x.h5")
