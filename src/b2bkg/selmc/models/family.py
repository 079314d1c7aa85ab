"""``smc-nn``: the skim-prediction network as a model family of the shared trainer.

One network predicts every skim of ``skims`` at once (one logit each, binary cross-entropy on
``passed_<skim>``), from generator-level particles and the decay string only. The architecture is
chosen in the config (``--set arch=conv|resnet|inception|seed|gnn|transformer``, see
:mod:`b2bkg.selmc.models.nets`).

Optional decorrelation penalty (``decorr_lambda > 0``): the squared distance correlation (DisCo,
Kasieczka & Shih, PRL 125 (2020) 122001) between the predicted pass probability and each of
``decorr_vars`` (``mbc``, ``de``, ``tag_p`` of the skim, ``n_tracks``, ``n_clusters``,
``e_visible``) among the skim-passing events of the batch, averaged and added to the loss. It
discourages the score from sculpting the monitored distributions (what makes a hard threshold
biased). The emulator outputs are read only here, during training; scoring never reads them.

Example:
    $ b2bkg simulate smc --events 60000 --seed 11 --out train.h5
    $ b2bkg train smc-nn --data train.h5 --val val.h5 --out runs/smc --set arch=seed
    $ b2bkg filter --model runs/smc --in test.h5 --out kept.h5 --p-min 0.01

Ensembles (``members > 1``): the network is a :class:`~b2bkg.selmc.models.nets.SmcEnsemble`
whose score averages the members' logits. Train the members jointly (``--set members=2``, each
member with its own loss on the same batches) or separately and combine their run folders with
:func:`merge_runs` (any folder it writes is an ordinary run folder for ``filter``, ``export``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError, ModelError
from b2bkg.io.events import SmcEvents
from b2bkg.training.data import ArrayBatches
from b2bkg.training.registry import Family, TrainConfig, register

from .nets import ARCHS, SmcEnsemble, SmcNet

__all__ = ["SmcNnConfig", "SmcNn", "to_batch", "predict", "load_run", "merge_runs", "DECORR_VARS", "distance_correlation",
           "ARCH_FIELDS"]

DECORR_VARS = ("mbc", "de", "tag_p", "n_tracks", "n_clusters", "e_visible")
#: config fields that fix a member network's shape and inputs: the members of an ensemble share them
ARCH_FIELDS = ("arch", "skims", "channels", "emb_dim", "hidden", "n_layers", "heads", "count_channels", "tag_features",
               "max_particles", "max_tokens")


@dataclass(frozen=True)
class SmcNnConfig(TrainConfig):
    """Skim-prediction network.

    Attributes:
        arch: network (:data:`~b2bkg.selmc.models.nets.ARCHS`).
        skims: skims predicted at once (one output each; labels ``passed_<skim>``).
        channels, emb_dim, hidden, n_layers, heads: network sizes (see :class:`SmcNet`).
        count_channels: width of the counting branch (summed per-particle MLP; 0: off).
        tag_features: add the generator-level tag-reconstructibility features
            (:data:`~b2bkg.selmc.features.TAG_FEATURE_NAMES`; off for runs trained before they existed).
        max_particles, max_tokens: padding/cut lengths of the particle list and the decay string.
        lr, weight_decay: AdamW.
        decorr_lambda: weight of the DisCo decorrelation penalty (0: off).
        decorr_vars: emulator outputs the score is decorrelated from (see :data:`DECORR_VARS`).
        train_events: use only the first N events of the training file (0: all).
        predict_batch: events per forward pass when scoring.
        members: networks in the ensemble (1: a single :class:`SmcNet`; M > 1: an
            :class:`SmcEnsemble` of M, logits averaged; cost per event x M).
    """

    arch: str = "seed"
    skims: tuple[str, ...] = ("fei_b0", "fei_bplus")
    channels: int = 32
    emb_dim: int = 8
    hidden: int = 32
    n_layers: int = 3
    heads: int = 2
    count_channels: int = 0
    tag_features: bool = False
    max_particles: int = 96
    max_tokens: int = 192
    lr: float = 2e-3
    weight_decay: float = 1e-4
    decorr_lambda: float = 0.0
    decorr_vars: tuple[str, ...] = ("mbc", "tag_p", "n_tracks")
    train_events: int = 0
    predict_batch: int = 512
    members: int = 1
    batch_size: int = 256
    val_metric: str = "bce"
    val_mode: str = "min"

    def __post_init__(self):
        super().__post_init__()
        if self.arch not in ARCHS:
            raise ConfigError(f"arch: {self.arch!r} is not one of {', '.join(ARCHS)}")
        if not self.skims:
            raise ConfigError("skims: give at least one skim (e.g. [fei_b0, fei_bplus])")
        bad = [v for v in self.decorr_vars if v not in DECORR_VARS]
        if bad:
            raise ConfigError(f"decorr_vars: {bad[0]!r} is not one of {', '.join(DECORR_VARS)}")
        check_range("channels", self.channels, 1, 4096)
        check_range("emb_dim", self.emb_dim, 1, 1024)
        check_range("hidden", self.hidden, 1, 4096)
        check_range("n_layers", self.n_layers, 1, 32)
        check_range("heads", self.heads, 1, 64)
        check_range("count_channels", self.count_channels, 0, 1024)
        check_range("max_particles", self.max_particles, 1, 4096)
        check_range("max_tokens", self.max_tokens, 1, 8192)
        check_range("lr", self.lr, 0.0, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_range("decorr_lambda", self.decorr_lambda, 0.0, None)
        check_range("train_events", self.train_events, 0, None)
        check_range("predict_batch", self.predict_batch, 1, None)
        check_range("members", self.members, 1, 64)


def to_batch(feats: dict[str, np.ndarray], device="cpu") -> dict[str, torch.Tensor]:
    """Features of :func:`~b2bkg.selmc.features.event_features` as tensors, trimmed to the longest
    event of the batch (scores do not depend on padding, so this only saves time)."""
    L = max(int(feats["mask"].sum(1).max(initial=0)), 1)
    T = max(int((feats["tokens"] > 0).sum(1).max(initial=0)), 1)
    out = {}
    for k in ("pdg", "mother_pdg", "mother", "x", "mask"):
        out[k] = torch.from_numpy(np.ascontiguousarray(feats[k][:, :L])).to(device)
    out["tokens"] = torch.from_numpy(np.ascontiguousarray(feats["tokens"][:, :T])).to(device)
    return out


def _features(events: SmcEvents, cfg: SmcNnConfig, vocab: np.ndarray):
    from b2bkg.selmc.features import event_features

    return event_features(events, max_particles=cfg.max_particles, max_tokens=cfg.max_tokens, vocab=vocab,
                          tag_features=cfg.tag_features)


def _generator_level(events: SmcEvents) -> SmcEvents:
    """The same events with only ``event_id`` kept per event: nothing of the emulator reaches the network."""
    pe = {k: v for k, v in events.per_event.items() if k == "event_id"}
    return SmcEvents(events.offsets, events.particles, pe)


@torch.inference_mode()
def predict(net: SmcNet, cfg: SmcNnConfig, events: SmcEvents, batch_size: int | None = None, device="cpu") -> np.ndarray:
    """Predicted pass probability per event and skim, shape (n_events, S) float32 (S = ``cfg.skims``).

    Reads only the generator-level particles of ``events`` (the emulator's outputs are dropped
    before the features are built).
    """
    events = _generator_level(events)
    vocab = net.vocab.cpu().numpy()
    bs = int(batch_size or cfg.predict_batch)
    was = net.training
    net.eval()
    outs = []
    for a in range(0, events.n_events, bs):
        ev = events.slice(a, min(a + bs, events.n_events))
        outs.append(torch.sigmoid(net(to_batch(_features(ev, cfg, vocab), device)).float()).cpu().numpy())
    net.train(was)
    return np.concatenate(outs) if outs else np.zeros((0, len(cfg.skims)), np.float32)


def load_run(run_dir: str | Path, device="cpu") -> tuple[SmcNet, SmcNnConfig]:
    """The trained network of an ``smc-nn`` run folder (``best.safetensors`` if validated, else the final weights)."""
    from b2bkg.core.config import from_dict, load_yaml
    from b2bkg.training.checkpoint import load_modules

    run = Path(run_dir)
    cfg_file = run / "config.yaml"
    if not cfg_file.is_file():
        raise ModelError(f"--model {run}: not a run folder (config.yaml missing)")
    rc = load_yaml(cfg_file)
    if rc.get("model") != "smc-nn":
        raise ModelError(f"--model {run}: a run of model {rc.get('model')!r}, filtering needs an smc-nn run")
    cfg = from_dict(SmcNnConfig, rc["config"])
    modules = SmcNn().build(cfg)
    weights = run / "best.safetensors" if (run / "best.safetensors").is_file() else run / "weights.safetensors"
    load_modules(weights, modules)
    return modules["net"].to(device).eval(), cfg


def merge_runs(runs, out: str | Path, *, command: str = "") -> Path:
    """Combine trained single-network ``smc-nn`` run folders into one ensemble run folder.

    Each run contributes the weights :func:`load_run` picks (``best.safetensors`` if validated).
    The runs must agree on :data:`ARCH_FIELDS` (same inputs and member shape); the first run's
    config is kept with ``members`` set to the number of runs.

    Args:
        runs: two or more run folders.
        out: new run folder (created; ``config.yaml`` + ``weights.safetensors`` + ``merged.json``).
    Returns:
        ``out`` as a Path, loadable by :func:`load_run` and every tool that reads run folders.
    """
    import hashlib

    from b2bkg.core.config import load_yaml, to_dict
    from b2bkg.training.checkpoint import save_modules, write_json, write_yaml

    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise ConfigError(f"merge_runs: give >= 2 run folders, got {len(runs)}")
    loaded = [load_run(r) for r in runs]
    c0 = loaded[0][1]
    for r, (_net, c) in zip(runs[1:], loaded[1:]):
        if c.members != 1:
            raise ConfigError(f"merge_runs: {r} is already an ensemble (members={c.members}); merge single networks")
        diff = [f for f in ARCH_FIELDS if getattr(c, f) != getattr(c0, f)]
        if diff:
            raise ConfigError(f"merge_runs: {r} differs from {runs[0]} in {diff[0]}={getattr(c, diff[0])!r} "
                              f"(vs {getattr(c0, diff[0])!r}); ensemble members must share {', '.join(ARCH_FIELDS)}")
    if c0.members != 1:
        raise ConfigError(f"merge_runs: {runs[0]} is already an ensemble (members={c0.members}); merge single networks")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rc = load_yaml(runs[0] / "config.yaml")
    rc["config"] = {**to_dict(c0), "members": len(runs)}
    rc["command"] = command or f"merge_runs({', '.join(map(str, runs))})"
    rc["ensemble_of"] = [str(r) for r in runs]
    ens = SmcEnsemble([net for net, _c in loaded])
    save_modules(out / "weights.safetensors", {"net": ens}, {"model": "smc-nn", "members": len(runs)})
    write_yaml(out / "config.yaml", rc)
    sources = []
    for r in runs:
        w = r / "best.safetensors" if (r / "best.safetensors").is_file() else r / "weights.safetensors"
        sources.append({"run": str(r), "weights": w.name, "sha256": hashlib.sha256(w.read_bytes()).hexdigest()})
    write_json(out / "merged.json", {"members": sources})
    return out


def distance_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared distance correlation dCor^2(x, y) of two 1D samples (n,) (0: independent; 1: functional)."""
    def centred(z):
        d = (z[:, None] - z[None, :]).abs()
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    a, b = centred(x), centred(y)
    dcov_xy, dcov_xx, dcov_yy = (a * b).mean(), (a * a).mean(), (b * b).mean()
    return dcov_xy / (dcov_xx * dcov_yy).clamp_min(1e-12).sqrt()


@register("smc-nn")
class SmcNn(Family):
    config_cls = SmcNnConfig
    outputs = ()
    cannot_generate = "smc-nn is a classifier: use b2bkg filter"
    description = "skim-prediction network for selective MC (conv / ResNet / N-paths / GNN / tree transformer)"

    def build(self, cfg):
        from b2bkg.selmc.features import default_vocabulary, n_particle_features

        vocab = torch.tensor(np.array(default_vocabulary()))

        def one():
            return SmcNet(cfg.arch, len(cfg.skims), vocab, n_particle_features(cfg.tag_features), emb_dim=cfg.emb_dim, channels=cfg.channels,
                          hidden=cfg.hidden, n_layers=cfg.n_layers, heads=cfg.heads, count_channels=cfg.count_channels)

        return {"net": one() if cfg.members == 1 else SmcEnsemble([one() for _ in range(cfg.members)])}

    def optimizers(self, cfg, modules):
        return {"net": torch.optim.AdamW(modules["net"].parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)}

    # -- data ------------------------------------------------------------------------------------
    @staticmethod
    def _read(path, n_max: int = 0) -> SmcEvents:
        from b2bkg.io import open_file

        with open_file(path) as f:
            if "smc" not in f.groups:
                raise ConfigError(f"--data {path}: no smc group (has: {', '.join(f.groups) or 'none'})")
            stop = f.n_events if n_max <= 0 else min(n_max, f.n_events)
            return f.read_smc(0, stop)

    def _targets(self, cfg, ev: SmcEvents) -> dict[str, np.ndarray]:
        from b2bkg.selmc.features import labels

        out = {"y": labels(ev, cfg.skims)}
        if cfg.decorr_lambda > 0:
            cols = []
            for s in cfg.skims:
                for v in cfg.decorr_vars:
                    key = f"{v}_{s}" if v in ("mbc", "de", "tag_p") else v
                    if key not in ev.per_event:
                        raise ConfigError(f"decorr_vars: training data has no {key!r}")
                    cols.append(ev.per_event[key].astype(np.float32))
            out["decorr"] = np.stack(cols, 1).reshape(ev.n_events, len(cfg.skims), len(cfg.decorr_vars))
        return out

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        """Features of every training event computed once (in chunks) and held in memory
        (~5 kB per event); batches are trimmed to their longest event."""
        events = self._read(path, cfg.train_events)
        vocab = self.build_vocab()
        parts = []
        for a in range(0, events.n_events, 5000):
            ev = events.slice(a, min(a + 5000, events.n_events))
            f = _features(_generator_level(ev), cfg, vocab)
            f.pop("n_particles")
            f.update(self._targets(cfg, ev))
            parts.append(f)
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}

        def transform(batch: dict):
            feats = {k: batch[k].numpy() for k in ("pdg", "mother_pdg", "mother", "x", "mask", "tokens")}
            out = to_batch(feats)
            out.update({k: batch[k] for k in batch if k not in feats})
            return out

        return ArrayBatches(arrays, cfg.batch_size, seed, rank, world_size, transform=transform)

    @staticmethod
    def build_vocab() -> np.ndarray:
        from b2bkg.selmc.features import default_vocabulary

        return np.array(default_vocabulary())

    def step(self, state, batch, step_idx):
        cfg, net = state.cfg, state.modules["net"]
        y = batch["y"]
        if isinstance(net, SmcEnsemble):  # every member its own loss: independent members
            ml = net.member_logits(batch)  # (M, B, S)
            logits = ml.mean(0)
            bce = F.binary_cross_entropy_with_logits(ml, y.expand_as(ml))
        else:
            logits = net(batch)  # (B, S)
            bce = F.binary_cross_entropy_with_logits(logits, y)
        loss, out = bce, {"bce": bce.item()}
        if cfg.decorr_lambda > 0:
            prob = torch.sigmoid(logits)
            terms = []
            for j in range(y.shape[1]):
                sel = y[:, j] > 0.5
                if int(sel.sum()) < 4:
                    continue
                for v in range(batch["decorr"].shape[2]):
                    val = batch["decorr"][sel, j, v]
                    ok = torch.isfinite(val)
                    if int(ok.sum()) >= 4:
                        terms.append(distance_correlation(prob[sel, j][ok], val[ok]))
            if terms:
                pen = torch.stack(terms).mean()
                loss = loss + cfg.decorr_lambda * pen
                out["dcor"] = pen.item()
        state.update("net", loss)
        return out

    # -- validation ------------------------------------------------------------------------------
    def load_val(self, cfg, path):
        ev = self._read(path, cfg.val_events)
        from b2bkg.selmc.features import labels

        return ev, labels(ev, cfg.skims)

    def validate(self, modules, cfg, val_data, seed):
        from b2bkg.selmc.speedup import roc_auc

        ev, y = val_data
        net = modules["net"]
        p = predict(net, cfg, ev, device=next(net.parameters()).device)
        pc = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
        out = {"bce": float(-(y * np.log(pc) + (1 - y) * np.log(1 - pc)).mean())}
        for j, s in enumerate(cfg.skims):
            out[f"auc_{s}"] = roc_auc(y[:, j], p[:, j])
        return out
