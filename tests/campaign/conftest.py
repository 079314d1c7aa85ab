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

    make_data, overrides = RECIPES[model]
    data = make_data(folder / "train")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(model, data, folder / "run", seed=0, overrides=overrides)
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
