"""Shared fixtures: tiny files in the real schemas, written into tmp_path."""

from __future__ import annotations

import os

os.environ.setdefault("B2BKG_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest

from b2bkg.io import Conditions, EclWaveforms
from b2bkg.testing import random_pxd, random_smc


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def tiny_pxd(rng):
    return random_pxd(rng)


@pytest.fixture
def tiny_ecl(rng):
    return EclWaveforms(rng.integers(2900, 3100, (2, 8736, 31)))


@pytest.fixture
def tiny_smc(rng):
    return random_smc(rng)


@pytest.fixture
def tiny_conditions(rng):
    return Conditions(rng.random((4, 6)), ("lumi", "her_current", "ler_current", "her_vacuum", "ler_vacuum", "injection"))


@pytest.fixture(autouse=True)
def one_thread():
    """2 shared CPU cores: 1 torch thread is faster and makes in-process and subprocess runs equal."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
