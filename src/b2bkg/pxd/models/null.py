"""``pxd-null``: the baseline every PXD comparison table carries.

Per sensor, the number of fired pixels of an event is Poisson with the sensor's training mean; the
pixels are uniform over the sensor (distinct pixels) and their charges are drawn from the
training fired-pixel charge spectrum (a 256-bin histogram). No clusters, no correlations, no
conditions: what a model adds over this is what it learned beyond occupancy and the charge spectrum.

Example:
    $ b2bkg train pxd-null --data train.h5 --out runs/null
    $ b2bkg generate --model runs/null --events 1000 --seed 2 --out null.h5
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from b2bkg.core.errors import ConfigError, ModelError, SchemaError
from b2bkg.core.progress import progress
from b2bkg.core.seeding import event_rng
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits
from b2bkg.pxd.sample import BlockedAlias
from b2bkg.training.registry import Family, TrainConfig, register

__all__ = ["NullConfig", "NullPxdModel", "NullPxd", "sample_null_event"]

SAMPLE_DOMAIN = "pxd-null.generate"
_PIX = N_UCELLS * N_VCELLS


@dataclass(frozen=True)
class NullConfig(TrainConfig):
    """``pxd-null`` (fit-only). ``chunk_events``: events read at once while fitting."""

    chunk_events: int = 200
    max_steps: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.chunk_events < 1:
            raise ConfigError(f"chunk_events: {self.chunk_events} must be >= 1")


class NullPxdModel(nn.Module):
    """Buffers: ``mean_pixels`` (40,) float64 fired pixels per sensor and event; ``charge_hist``
    (256,) float64 fired-pixel charge histogram (ADU 0..255)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean_pixels", torch.zeros(N_SENSORS, dtype=torch.float64))
        self.register_buffer("charge_hist", torch.zeros(256, dtype=torch.float64))

    def forward(self, *_):  # pragma: no cover - tables only
        raise NotImplementedError("pxd-null samples with sample_null_event()")


def sample_null_event(mean_pixels: np.ndarray, charge: BlockedAlias, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One event: Poisson(mean_pixels[s]) distinct uniform pixels on sensor s, charges from the spectrum.

    Returns:
        ``sensor`` uint8, ``ucell``/``vcell`` uint16, ``charge`` uint8 (ADU), sorted by (sensor, vcell, ucell).
    """
    n = np.minimum(rng.poisson(mean_pixels), _PIX)
    sensor = np.repeat(np.arange(N_SENSORS, dtype=np.int64), n)
    # uniform pixel index per sensor; duplicates (probability ~ occupancy / 2) are redrawn
    pix = (rng.random(len(sensor)) * _PIX).astype(np.int64)
    for _ in range(20):
        key = sensor * _PIX + pix
        order = np.argsort(key, kind="stable")
        dup = np.zeros(len(key), bool)
        dup[order[1:]] = key[order[1:]] == key[order[:-1]]
        if not dup.any():
            break
        pix[dup] = (rng.random(int(dup.sum())) * _PIX).astype(np.int64)
    key = np.unique(sensor * _PIX + pix)
    q = charge.draw(np.zeros(len(key), np.int64), rng.random((2, len(key)))).astype(np.uint8)
    s = key // _PIX
    p = key % _PIX
    return {"sensor": s.astype(np.uint8), "ucell": (p % N_UCELLS).astype(np.uint16),
            "vcell": (p // N_UCELLS).astype(np.uint16), "charge": q}


@register("pxd-null")
class NullPxd(Family):
    config_cls = NullConfig
    outputs = ("pxd",)
    generate_batch_size = 64
    description = "baseline: per-sensor Poisson pixels, uniform positions, empirical charge spectrum"

    def build(self, cfg):
        return {"model": NullPxdModel()}

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        return str(path)

    def fit(self, cfg, modules, data, seed):
        from b2bkg.io import open_file

        with open_file(data) as f:
            if "pxd" not in f.groups:
                raise SchemaError(str(data), "pxd", f"pxd-null needs a pxd group (file has: {', '.join(f.groups) or 'none'})")
            n = f.n_events
            if n < 1:
                raise ConfigError(f"--data {data}: no events")
            counts = np.zeros(N_SENSORS)
            hist = np.zeros(256)
            for d in progress(f.iter_pxd(cfg.chunk_events), total=-(-n // cfg.chunk_events), desc="pxd-null", unit="chunk"):
                counts += np.bincount(d.sensor, minlength=N_SENSORS)
                hist += np.bincount(d.charge, minlength=256)
        m = modules["model"]
        m.mean_pixels.copy_(torch.as_tensor(counts / n))
        m.charge_hist.copy_(torch.as_tensor(hist))
        return {"n_events": n, "mean_occupancy_pct": float(counts.sum() / n / (N_SENSORS * _PIX) * 100),
                "mean_charge_adu": float((hist * np.arange(256)).sum() / max(hist.sum(), 1))}

    @torch.no_grad()
    def sample(self, modules, cfg, events, seed, device, conditions=None, keep=None):
        m = modules["model"]
        hist = m.charge_hist.cpu().numpy()
        if hist.sum() <= 0:
            raise ModelError("pxd-null: the model holds no fitted charge spectrum (train it first)")
        mean = m.mean_pixels.cpu().numpy()
        alias = BlockedAlias.from_flat(hist, np.array([0, 256]))
        evs = [sample_null_event(mean, alias, event_rng(seed, SAMPLE_DOMAIN, int(e))) for e in np.asarray(events).reshape(-1)]
        return {"pxd": PxdDigits.from_events(evs)}
