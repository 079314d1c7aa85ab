"""smc-nn: every architecture's contract, the family's training loop and the run-folder round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from b2bkg.core.errors import ConfigError, ModelError
from b2bkg.io import FileWriter
from b2bkg.selmc.features import N_PARTICLE_FEATURES, default_vocabulary, event_features, n_particle_features
from b2bkg.selmc.models.family import SmcNnConfig, distance_correlation, load_run, predict, to_batch
from b2bkg.selmc.models.nets import ARCHS, SmcNet, TreeAttention
from b2bkg.selmc.simulate import iter_smc_chunks
from b2bkg.training import train
from b2bkg.training.registry import get_family

N = 48


@pytest.fixture(scope="module")
def events():
    return next(iter_smc_chunks(N, 5, sample="mixed", chunk_size=N))


@pytest.fixture(scope="module")
def data_file(events, tmp_path_factory):
    path = tmp_path_factory.mktemp("smc") / "train.h5"
    with FileWriter(path, seed=5, attrs={"sample": "mixed"}) as w:
        w.append(smc=events)
    return path


def _net(arch, count_channels=0):
    torch.manual_seed(0)
    return SmcNet(arch, 2, torch.tensor(np.array(default_vocabulary())), N_PARTICLE_FEATURES, emb_dim=4, channels=8, hidden=8,
                  n_layers=2, heads=2, count_channels=count_channels)


@pytest.mark.parametrize("arch,count_channels", [(a, 0) for a in ARCHS] + [("seed", 4), ("gnn", 4)])
def test_contract(arch, count_channels, events):
    net = _net(arch, count_channels)
    feats = event_features(events.slice(0, 8), max_particles=96, max_tokens=192)
    batch = to_batch(feats)
    logits = net(batch)
    assert logits.shape == (8, 2) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    logits.sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    # padding and batch composition do not change an event's score
    net.eval()
    with torch.no_grad():
        full = net({k: torch.from_numpy(v) for k, v in feats.items() if k != "n_particles"})
        alone = net(to_batch({k: v[2:3] for k, v in feats.items()}))
        trimmed = net(batch)
    torch.testing.assert_close(full, trimmed, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone, trimmed[2:3], rtol=1e-4, atol=1e-5)


def test_tree_relations():
    mother = torch.tensor([[-1, 0, 0, 1, -1]])
    rel = TreeAttention.relations(mother)[0]
    assert rel[1, 0] == 2 and rel[0, 1] == 3 and rel[1, 2] == 4 and rel[3, 1] == 2 and rel[0, 4] == 0 and rel[2, 2] == 1
    assert rel[0, 4] == 0 and rel[4, 0] == 0  # two primaries are not siblings


def test_distance_correlation_exact():
    x = torch.linspace(0, 1, 50)
    assert float(distance_correlation(x, 3 * x + 1)) == pytest.approx(1.0, abs=1e-5)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(400, generator=g), torch.rand(400, generator=g)
    assert float(distance_correlation(a, b)) < 0.1


def test_config_errors():
    with pytest.raises(ConfigError, match="arch"):
        SmcNnConfig(arch="mlp")
    with pytest.raises(ConfigError, match="decorr_vars"):
        SmcNnConfig(decorr_vars=("mass",))
    assert get_family("smc-nn").cannot_generate == "smc-nn is a classifier: use b2bkg filter"


@pytest.mark.parametrize("arch,decorr,tag", [("seed", 0.0, False), ("gnn", 1.0, False), ("seed", 0.0, True)])
def test_train_and_reload(arch, decorr, tag, data_file, events, tmp_path):
    run = train("smc-nn", data_file, tmp_path / "run", val=data_file, seed=3,
                overrides=[f"arch={arch}", "max_steps=3", "batch_size=16", "channels=8", "emb_dim=4", "hidden=8",
                           "n_layers=2", "val_events=32", "val_every=3", "log_every=1", f"decorr_lambda={decorr}",
                           f"tag_features={str(tag).lower()}"])
    assert (run / "weights.safetensors").is_file() and (run / "best.json").is_file()
    log = (run / "log.csv").read_text()
    assert "bce" in log and (("dcor" in log) == (decorr > 0) or decorr > 0)
    net, cfg = load_run(run)
    assert cfg.tag_features is tag
    assert net.pdg_emb.embedding_dim * 2 + n_particle_features(tag) == (
        net.particle_branch.stem.in_channels if arch == "seed" else net.inp.in_features)
    p1 = predict(net, cfg, events, batch_size=7)
    p2 = predict(net, cfg, events, batch_size=48)
    assert p1.shape == (N, 2) and ((p1 >= 0) & (p1 <= 1)).all()
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)


def test_load_run_errors(tmp_path):
    with pytest.raises(ModelError, match="config.yaml"):
        load_run(tmp_path)


def test_count_branch_sees_multiplicity(events):
    """Mean pools cannot tell an event from the same particles twice; the summed counting branch can."""
    net = _net("conv", count_channels=4).eval()
    feats = event_features(events.slice(0, 1), max_particles=96, max_tokens=192)
    b = to_batch(feats)
    with torch.no_grad():
        _check_counts(net, b)


def _check_counts(net, b):
    part = torch.cat([net.pdg_emb(b["pdg"]), net.mother_emb(b["mother_pdg"]), b["x"]], -1)
    one = (net.counter(part) * b["mask"].unsqueeze(-1)).sum(1)
    two = (net.counter(torch.cat([part, part], 1)) * torch.cat([b["mask"], b["mask"]], 1).unsqueeze(-1)).sum(1)
    torch.testing.assert_close(two, 2 * one)
    assert float(one.sum()) > 0


def test_ensemble_averages_member_logits(events):
    from b2bkg.selmc.models.nets import SmcEnsemble

    a, b = _net("seed"), _net("gnn")
    ens = SmcEnsemble([a, b]).eval()
    batch = to_batch(event_features(events.slice(0, 6), max_particles=96, max_tokens=192))
    with torch.no_grad():
        torch.testing.assert_close(ens(batch), (a(batch) + b(batch)) / 2)
        assert ens.member_logits(batch).shape == (2, 6, 2)
    with pytest.raises(ConfigError, match="members"):
        SmcEnsemble([a])


def test_merge_runs_and_joint_ensemble(data_file, events, tmp_path):
    from b2bkg.selmc.models.family import merge_runs
    from b2bkg.selmc.models.nets import SmcEnsemble

    base = ["max_steps=2", "batch_size=16", "channels=8", "emb_dim=4", "hidden=8", "n_layers=2", "val_events=32", "val_every=2"]
    r1 = train("smc-nn", data_file, tmp_path / "a", val=data_file, seed=3, overrides=base)
    r2 = train("smc-nn", data_file, tmp_path / "b", val=data_file, seed=4, overrides=base)
    merged = merge_runs([r1, r2], tmp_path / "ens")
    net, cfg = load_run(merged)
    assert isinstance(net, SmcEnsemble) and cfg.members == 2
    (n1, c1), (n2, _c2) = load_run(r1), load_run(r2)
    l1 = np.log(p := predict(n1, c1, events)) - np.log1p(-p)
    l2 = np.log(p := predict(n2, c1, events)) - np.log1p(-p)
    np.testing.assert_allclose(predict(net, cfg, events), 1 / (1 + np.exp(-(l1 + l2) / 2)), rtol=1e-4, atol=1e-6)
    r3 = train("smc-nn", data_file, tmp_path / "c", seed=3, overrides=base[:-2] + ["channels=12"])
    with pytest.raises(ConfigError, match="channels"):
        merge_runs([r1, r3], tmp_path / "bad")
    # members trained jointly: one run folder, an ensemble, its own loss per member
    r4 = train("smc-nn", data_file, tmp_path / "joint", val=data_file, seed=3, overrides=base + ["members=2"])
    net4, cfg4 = load_run(r4)
    assert isinstance(net4, SmcEnsemble) and len(net4.members) == 2
    assert not torch.equal(net4.members[0].head[0].weight, net4.members[1].head[0].weight)
    assert predict(net4, cfg4, events).shape == (N, 2)
