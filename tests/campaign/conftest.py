"""Fixtures for the campaign tests: a tiny trained run folder of any family, and a reader that
turns any generated file (.npy of the toy family, or contract .h5/.root) into comparable arrays."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

# How to train a tiny run of each family in seconds: (data writer, overrides). The tests use the
# first family of CAMPAIGN_MODELS that is registered; adding one here makes them run on it too.
CAMPAIGN_MODELS = ("toy-gan",)


def _toy_data(path: Path) -> Path:
    from b2bkg.training.toy import make_toy_data

    make_toy_data(path.with_suffix(".npy"), 300, seed=1)
    return path.with_suffix(".npy")


def _pxd_data(path: Path) -> Path:
    from b2bkg.pxd.simulate import simulate_pxd

    return simulate_pxd(4, 1, path.with_suffix(".h5"))


RECIPES = {
    "toy-gan": (_toy_data, ["max_steps=4", "log_every=2", "checkpoint_every=4"]),
    "pxd-null": (_pxd_data, []),
}


def train_tiny(model: str, folder: Path) -> Path:
    """Train ``model`` on a tiny synthetic sample into ``folder/run`` (seconds); returns the run folder."""
    from b2bkg.training import train

    make_data, overrides, *config = RECIPES[model]
    data = make_data(folder / "train")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # "family/variant" keys train the family with the variant's overrides
        return train(model.split("/")[0], data, folder / "run", seed=0, overrides=overrides,
                     **({"config": config[0]} if config else {}))
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A trained run folder of the first available family of :data:`CAMPAIGN_MODELS`."""
    from b2bkg.training.registry import known_families

    model = next(m for m in CAMPAIGN_MODELS if m in known_families())
    return train_tiny(model, tmp_path_factory.mktemp(f"run-{model}"))


def read_events(path) -> dict[str, np.ndarray]:
    """Every array of a generated file, keyed ``group/field`` (``x`` for a toy .npy file)."""
    path = Path(path)
    if path.suffix == ".npy":
        return {"x": np.load(path, allow_pickle=False)}
    from b2bkg.io import open_file

    out = {}
    with open_file(path) as f:
        for g in f.groups:
            c = f.read(g)
            fields = dataclasses.fields(c) if dataclasses.is_dataclass(c) else []
            for fld in fields:
                v = getattr(c, fld.name)
                for k, a in (v.items() if isinstance(v, dict) else [("", v)]):
                    if isinstance(a, np.ndarray):
                        out[f"{g}/{fld.name}{'/' + k if k else ''}"] = a
    return out


@pytest.fixture(name="read_events")
def read_events_fixture():
    """:func:`read_events` as a fixture (conftest modules are not importable under importlib mode)."""
    return read_events


def _ecl_data(path: Path) -> Path:
    from b2bkg.ecl.simulate import simulate_ecl

    return simulate_ecl(4, 1, path.with_suffix(".h5"))


RECIPES["ecl-cov"] = (_ecl_data, [])


@pytest.fixture(scope="session")
def tiny_ecl_run(tmp_path_factory):
    """A fit-only ECL model (ecl-cov) fitted on 4 simulated events: a pillar model for the storage tests."""
    from b2bkg.training.registry import known_families

    if "ecl-cov" not in known_families():
        pytest.skip("ecl-cov is not registered")
    return train_tiny("ecl-cov", tmp_path_factory.mktemp("run-ecl-cov"))


# ---- tiny recipes of every exportable family (tests/campaign/test_onnx.py) -----------------
def _smc_data(path: Path) -> Path:
    from b2bkg.io import FileWriter
    from b2bkg.selmc.simulate import iter_smc_chunks

    ev = next(iter_smc_chunks(48, 9, sample="mixed", chunk_size=48))
    out = path.with_suffix(".h5")
    with FileWriter(out, seed=9) as w:
        w.append(smc=ev)
    return out


_ECL_TINY = ["max_steps=1", "max_train_events=3", "val_events=3", "val_crystals=8", "log_every=1", "val_every=0"]
_PXD_COMMON = ["max_steps=1", "log_every=1", "val_every=0", "checkpoint_every=1", "val_events=2"]
_SMC_TINY = ["max_steps=1", "batch_size=16", "channels=8", "emb_dim=4", "hidden=8", "n_layers=1"]
RECIPES.update({
    "ecl-gan": (_ecl_data, _ECL_TINY + ["d_channels=8"]),
    "ecl-ae": (_ecl_data, _ECL_TINY + ["batch_size=64", "hidden=16"]),
    "pxd-wgan": (_pxd_data, _PXD_COMMON + ["batch_size=2", "n_critic=1", "latent_dim=4", "base_grid=[8,24]", "channels=[4]",
                                           "critic_channels=[2,2]", "kernel=3"]),
    "pxd-event-gan": (_pxd_data, _PXD_COMMON + ["batch_size=1", "n_critic=1", "latent_dim=4", "sensor_latent_dim=2",
                                                "sensor_dim=2", "base_grid=[16,48]", "channels=[4]", "noise_channels=1",
                                                "critic_channels=[2,2]", "head_hidden=4"]),
    "pxd-iea-gan": (_pxd_data, _PXD_COMMON + ["batch_size=1", "n_dis=1", "latent_dim=2", "embed_dim=4", "heads=1",
                                              "base_grid=[16,48]", "channels=[4]", "noise_channels=1", "critic_channels=[2,2]"]),
    "pxd-diffusion": (_pxd_data, ["base_channels=8", "channel_mults=[1,2]", "emb_dim=16", "batch_size=4", "max_steps=1",
                                  "sampler_steps=2", "num_train_timesteps=20", "log_every=1", "checkpoint_every=1",
                                  "val_every=0", "decoder_fit_events=2", "lr_warmup_steps=0"], "small"),
    "smc-nn": (_smc_data, _SMC_TINY + ["arch=conv", "tag_features=true"]),
    "smc-nn/transformer": (_smc_data, _SMC_TINY + ["arch=transformer", "heads=2"]),
})


@pytest.fixture(name="train_tiny_fn")
def train_tiny_fixture():
    """:func:`train_tiny` as a fixture (conftest modules are not importable under importlib mode)."""
    return train_tiny
