"""One contract test over every registered PXD event generator family (``pxd-*``).

For each family that can generate events: a few training steps on a tiny contract-schema file
(losses finite), gradients reach every parameter (optimizer families), the output is
full-resolution zero-suppressed digits, the same seed gives the same events, and the weights
survive a save/load round trip through the run folder (``generate`` from the folder = sampling the
loaded modules). Families get a tiny config here when listed in ``TINY``; any other ``pxd-*``
family (e.g. ``pxd-fast``, ``pxd-null``) runs its ``small`` preset with ``max_steps=2``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from b2bkg.io import FileWriter, read_pxd
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits
from b2bkg.training.registry import get_family, known_families

COMMON = {"max_steps": 2, "log_every": 1, "val_every": 0, "checkpoint_every": 1, "val_events": 2}
TINY = {
    "pxd-wgan": {"batch_size": 2, "n_critic": 1, "latent_dim": 4, "base_grid": [8, 24], "channels": [4],
                 "critic_channels": [2, 2], "kernel": 3, "out_bias_init": -0.5},
    "pxd-event-gan": {"batch_size": 1, "n_critic": 1, "latent_dim": 4, "sensor_latent_dim": 2, "sensor_dim": 2,
                      "base_grid": [16, 48], "channels": [4], "noise_channels": 1, "critic_channels": [2, 2],
                      "head_hidden": 4, "out_bias_init": -0.5},
    "pxd-iea-gan": {"batch_size": 1, "n_dis": 1, "latent_dim": 2, "embed_dim": 4, "heads": 1, "base_grid": [16, 48],
                    "channels": [4], "noise_channels": 1, "critic_channels": [2, 2], "out_bias_init": -0.5},
    "pxd-diffusion": {"batch_size": 8, "base_channels": 8, "channel_mults": [1, 2], "emb_dim": 16, "sampler_steps": 2,
                      "decoder_fit_events": 2, "lr_warmup_steps": 0},
}
# event generators only: a component family (the cluster GAN) declares cannot_generate and has its own tests
PXD_FAMILIES = [n for n in known_families() if n.startswith("pxd-") and not get_family(n).cannot_generate]


def _clustered_digits(rng: np.random.Generator, n_events: int) -> PxdDigits:
    """Events of 2x2 clusters (charge 7..60 ADU) at random positions on random sensors."""
    events = []
    for _ in range(n_events):
        n = int(rng.integers(20, 60))
        s = rng.integers(0, N_SENSORS, n)
        u, v = rng.integers(0, N_UCELLS - 1, n), rng.integers(0, N_VCELLS - 1, n)
        du, dv = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
        key = np.unique(((np.repeat(s, 4) * N_UCELLS + (u[:, None] + du).ravel()) * N_VCELLS + (v[:, None] + dv).ravel()))
        events.append({"sensor": key // (N_UCELLS * N_VCELLS), "ucell": key // N_VCELLS % N_UCELLS, "vcell": key % N_VCELLS,
                       "charge": rng.integers(7, 60, len(key))})
    return PxdDigits.from_events(events)


@pytest.fixture(scope="module")
def pxd_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pxd") / "train.h5"
    with FileWriter(path, seed=1, command="test") as w:
        w.append(pxd=_clustered_digits(np.random.default_rng(3), 4))
    return path


def _config(name: str):
    from b2bkg.training.trainer import resolve_config

    fam = get_family(name)
    if name in TINY:
        return fam, resolve_config(fam, {**COMMON, **TINY[name]})
    over = [] if fam.is_fit else [f"{k}={v}" for k, v in COMMON.items() if k in ("max_steps", "checkpoint_every", "log_every")]
    return fam, resolve_config(fam, "small", over)


def _check_digits(d: PxdDigits, n_events: int, threshold: int) -> None:
    d.validate()
    assert d.n_events == n_events
    assert d.sensor.dtype == np.uint8 and d.ucell.dtype == np.uint16 and d.vcell.dtype == np.uint16 and d.charge.dtype == np.uint8
    if d.n_hits:
        assert d.sensor.max() < N_SENSORS and d.ucell.max() < N_UCELLS and d.vcell.max() < N_VCELLS
        assert d.charge.min() >= threshold
        # zero-suppressed full-resolution pixels: each (event, sensor, u, v) at most once
        key = ((d.event_index().astype(np.int64) * N_SENSORS + d.sensor) * N_UCELLS + d.ucell) * N_VCELLS + d.vcell
        assert len(np.unique(key)) == d.n_hits


def _same(a: PxdDigits, b: PxdDigits) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("offsets", "sensor", "ucell", "vcell", "charge"))


@pytest.mark.parametrize("name", PXD_FAMILIES)
def test_generator_contract(name, pxd_file, tmp_path):
    from b2bkg.generate import generate, load_run
    from b2bkg.training.checkpoint import load_modules
    from b2bkg.training.distributed import DistInfo
    from b2bkg.training.trainer import TrainState, train

    fam, cfg = _config(name)
    threshold = int(getattr(cfg, "threshold_adu", 1))

    # gradients reach every parameter in one training step (optimizer families)
    if not fam.is_fit:
        torch.manual_seed(0)
        modules = fam.build(cfg)
        opts = fam.optimizers(cfg, modules)
        data = fam.make_data(cfg, pxd_file, seed=0)
        state = TrainState(cfg, modules, opts, torch.device("cpu"), DistInfo(), data)
        losses = fam.step(state, data.next(), 0)
        assert losses and all(math.isfinite(v) for v in losses.values()), losses
        for mname, m in modules.items():
            for pname, p in m.named_parameters():
                assert p.grad is not None, f"{name}: no gradient reaches {mname}.{pname}"
                assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {mname}.{pname}"

    # a few steps through the shared trainer, losses finite
    run = train(name, pxd_file, tmp_path / "run", config=cfg, seed=0)
    import csv

    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        for k, v in row.items():
            if v not in ("", None):
                assert math.isfinite(float(v)), f"{name}: {k} = {v} in log.csv"

    # same seed -> same events; full-resolution digits
    loaded = load_run(run)
    events = np.arange(2)
    a = fam.sample(loaded.modules, loaded.cfg, events, 11, torch.device("cpu"))["pxd"]
    b = fam.sample(loaded.modules, loaded.cfg, events, 11, torch.device("cpu"))["pxd"]
    _check_digits(a, 2, threshold)
    assert _same(a, b)

    # save/load round trip: fresh modules (other init) loaded from the run folder sample the same
    torch.manual_seed(123)
    fresh = fam.build(loaded.cfg)
    load_modules(loaded.weights_file, fresh)
    for mname, m in fresh.items():
        ref = loaded.modules[mname].state_dict()
        for k, v in m.state_dict().items():
            assert torch.equal(v, ref[k]), f"{name}: {mname}.{k} differs after loading"
    fresh = {k: m.eval() for k, m in fresh.items()}
    assert _same(fam.sample(fresh, loaded.cfg, events, 11, torch.device("cpu"))["pxd"], a)

    # generate() from the run folder writes the same events
    out = generate(run, 2, seed=11, out=tmp_path / "gen.h5", batch_size=2)
    if fam.conditioned:  # generate() draws per-event beam conditions and records them in the file
        from b2bkg.io import open_file

        with open_file(out) as f:
            cond = f.read_conditions()
        a = fam.sample(loaded.modules, loaded.cfg, events, 11, torch.device("cpu"), conditions=cond)["pxd"]
    assert _same(read_pxd(out), a)
