"""``toy-gan``: a few-parameter WGAN-GP on a 1D Gaussian mixture, exercising the trainer end to end.

Not a detector model: it is the reference implementation of the family interface
(:mod:`b2bkg.training.registry`) and what the trainer's tests train. Data file: a ``.npy`` array of
shape ``(n,)`` float (one value per "event"; :func:`make_toy_data` writes one). Generated files are
``.npy`` too, with a ``.json`` sidecar recording seed, command and model.

Example:
    >>> from b2bkg.training.toy import make_toy_data                        # doctest: +SKIP
    >>> make_toy_data("toy.npy", 4000, seed=1)                                # doctest: +SKIP
    $ b2bkg train toy-gan --data toy.npy --val toy_val.npy --out runs/toy --set max_steps=300
    $ b2bkg generate --model runs/toy --events 1000 --seed 2 --out gen.npy
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError
from b2bkg.core.seeding import stream_rng

from b2bkg.nn.gan import gradient_penalty

from .checkpoint import atomic_path
from .data import ArrayBatches
from .registry import Family, TrainConfig, register
from .sampling import event_normal

__all__ = ["ToyGanConfig", "ToyGan", "make_toy_data", "ks_statistic", "NpyWriter"]


@dataclass(frozen=True)
class ToyGanConfig(TrainConfig):
    """Toy WGAN-GP. ``sleep_s`` pauses each step (only for kill/resume tests)."""

    latent_dim: int = 4
    hidden: int = 32
    n_critic: int = 2
    gp_lambda: float = 1.0
    lr: float = 2e-3
    beta1: float = 0.5
    beta2: float = 0.9
    sleep_s: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        check_range("latent_dim", self.latent_dim, 1, 1024)
        check_range("hidden", self.hidden, 1, 4096)
        check_range("n_critic", self.n_critic, 1, 100)
        check_range("gp_lambda", self.gp_lambda, 0.0, None)
        check_range("lr", self.lr, 0.0, 1.0)
        check_range("sleep_s", self.sleep_s, 0.0, 10.0, "s")


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, n_out))


def make_toy_data(path: str | Path, n_events: int, seed: int, means=(-2.0, 2.0), sigma: float = 0.5) -> np.ndarray:
    """Write ``n_events`` draws of an equal-weight Gaussian mixture to ``path`` (.npy, float32, shape (n,))."""
    rng = stream_rng(seed, "toy.data")
    comp = rng.integers(0, len(means), n_events)
    x = (np.asarray(means)[comp] + sigma * rng.standard_normal(n_events)).astype(np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, x)
    return x


def _load_values(path) -> np.ndarray:
    p = Path(path)
    if p.suffix != ".npy":
        raise ConfigError(f"{p}: toy-gan reads a .npy array of shape (n,), got suffix {p.suffix!r}")
    x = np.load(p, allow_pickle=False)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise ConfigError(f"{p}: toy-gan needs a finite float array of shape (n,), got {x.dtype} {x.shape}")
    return x.astype(np.float32)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup|F_a - F_b| (vectorized)."""
    a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


class NpyWriter:
    """Collects ``append(x=array)`` chunks; on success writes ``path`` (.npy) and ``path.json``."""

    def __init__(self, path, *, seed: int, command: str = "", attrs: dict | None = None):
        self.path, self.meta, self.parts = Path(path), {"seed": seed, "command": command, **(attrs or {})}, []

    def __enter__(self):
        return self

    def append(self, x: np.ndarray, **_):
        self.parts.append(np.asarray(x, np.float32))

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            return False
        x = np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, x)
        with atomic_path(self.path.with_suffix(self.path.suffix + ".json")) as tmp:
            tmp.write_text(json.dumps({**self.meta, "n_events": len(x)}, default=str))
        return False


@register("toy-gan")
class ToyGan(Family):
    config_cls = ToyGanConfig
    outputs = ("x",)
    output_suffix = ".npy"
    description = "toy WGAN-GP on a 1D Gaussian mixture (trainer tests)"

    def build(self, cfg):
        return {"generator": _mlp(cfg.latent_dim, cfg.hidden, 1), "critic": _mlp(1, cfg.hidden, 1)}

    def optimizers(self, cfg, modules):
        return {k: torch.optim.Adam(m.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)) for k, m in modules.items()}

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        return ArrayBatches(_load_values(path)[:, None], cfg.batch_size, seed, rank, world_size)

    def step(self, state, batch, step_idx):
        """n_critic critic updates (WGAN-GP), then one generator update; batch (B, 1)."""
        cfg, G, D = state.cfg, state.modules["generator"], state.modules["critic"]
        dev = state.device
        for i in range(cfg.n_critic):
            real = batch if i == 0 else state.next_batch()                      # (B, 1)
            with torch.no_grad():
                fake = G(torch.randn(len(real), cfg.latent_dim, device=dev))    # (B, 1)
            gp = gradient_penalty(D, real, fake)
            wdist = D(real).mean() - D(fake).mean()
            state.update("critic", -wdist + cfg.gp_lambda * gp)
        g_loss = -D(G(torch.randn(len(batch), cfg.latent_dim, device=dev))).mean()
        state.update("generator", g_loss)
        if cfg.sleep_s:
            time.sleep(cfg.sleep_s)
        return {"wdist": wdist.item(), "gp": gp.item(), "g_loss": g_loss.item()}

    def load_val(self, cfg, path):
        return _load_values(path)

    def validate(self, modules, cfg, val_data, seed):
        x = self.sample(modules, cfg, np.arange(cfg.val_events), seed, next(modules["generator"].parameters()).device)["x"]
        return {"ks": ks_statistic(x, val_data), "mean_diff": float(abs(x.mean() - val_data.mean()))}

    @torch.no_grad()
    def sample(self, modules, cfg, events, seed, device, conditions=None, keep=None):
        z = event_normal(seed, events, (cfg.latent_dim,), device)               # (n, latent_dim)
        return {"x": modules["generator"](z)[:, 0].float().cpu().numpy()}      # (n,)

    def open_writer(self, path, *, seed, command, attrs):
        if Path(path).suffix != ".npy":
            raise ConfigError(f"--out {path}: toy-gan writes .npy files")
        return NpyWriter(path, seed=seed, command=command, attrs=attrs)
