"""pxd-fast (the sparse production generator) and pxd-null: time and peak memory per 40-sensor event.

* ``pxd-fast``: one event per unit through the family's sampler (counts, positions, cluster
  shapes and charges, assembly into digits), at nominal conditions; ratio to the paper generator
  (``pxd-wgan-paper``) in the same run and thread count; target 20 ms/event (issue 6).
* ``pxd-fast-occ0.5`` / ``pxd-fast-occ2``: the same model with every cluster-count intercept
  shifted by log(0.5) / log(2) (half / twice the nominal occupancy); baseline ``pxd-fast``, so the
  ratio is how the cost scales with occupancy.
* ``pxd-null``: the baseline model (Poisson pixels, charge spectrum).

The model is trained once per process in a temporary folder on a small simulated sample (20
events, ~30 s of setup), unless ``B2BKG_BENCH_PXD_FAST_RUN`` names a trained run folder (and
``B2BKG_BENCH_PXD_NULL_RUN`` one of pxd-null). Speed does not depend on how well it was trained,
only on the occupancy it generates (printed in the workload description of the log).
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from pathlib import Path

from harness import SkipWorkload, Target, workload

from workloads.pxd import PXD_BASELINE

EVENTS_PER_CALL = 5
_TRAIN_SET = ["calib_iters=1", "calib_events=5", "calib_occ_events=10"]


@functools.lru_cache(maxsize=1)
def _data_file() -> Path:
    try:
        from b2bkg.pxd.simulate import simulate_pxd
    except ImportError as e:
        raise SkipWorkload(f"b2bkg.pxd.simulate is not available ({e})") from None
    tmp = Path(tempfile.mkdtemp(prefix="b2bkg-bench-fast-"))
    return simulate_pxd(20, 1, tmp / "train.h5")


@functools.lru_cache(maxsize=2)
def _run(model: str) -> Path:
    env = {"pxd-fast": "B2BKG_BENCH_PXD_FAST_RUN", "pxd-null": "B2BKG_BENCH_PXD_NULL_RUN"}[model]
    if os.environ.get(env):
        return Path(os.environ[env])
    try:
        from b2bkg.training.trainer import train
    except ImportError as e:
        raise SkipWorkload(f"b2bkg.training is not available ({e})") from None
    data = _data_file()
    out = data.parent / model
    overrides = _TRAIN_SET if model == "pxd-fast" else []
    return train(model, data, out, config="small", overrides=overrides, seed=1)


def _sampler(model: str, occupancy_factor: float = 1.0):
    from b2bkg.generate import load_run

    run = load_run(_run(model))
    if occupancy_factor != 1.0:
        coef = run.modules["model"].coef
        coef[:, 0] += math.log(occupancy_factor)  # every (sensor, class) count mean x factor
    counter = {"event": 0}

    def one_call():
        import numpy as np

        e0 = counter["event"]
        counter["event"] += EVENTS_PER_CALL
        events = np.arange(e0, e0 + EVENTS_PER_CALL, dtype=np.int64)
        d = run.family.sample(run.modules, run.cfg, events, 1, "cpu")["pxd"]
        if d.n_hits == 0:
            raise RuntimeError(f"{model} generated no hits")
        return EVENTS_PER_CALL

    return one_call


_TARGET = Target(max_time_s=0.020, source="issue 6 (<= 20 ms per 40-sensor event, 1 thread)")


@workload("pxd-fast", baseline=PXD_BASELINE, unit="event", units_per_call=EVENTS_PER_CALL, repeats=10, warmup=1,
          quick_repeats=3, target=_TARGET)
def pxd_fast(quick: bool):
    """pxd-fast sparse generator at nominal occupancy: counts, positions, clusters, assembly -> digits."""
    return _sampler("pxd-fast")


@workload("pxd-fast-occ0.5", baseline="pxd-fast", unit="event", units_per_call=EVENTS_PER_CALL, repeats=10,
          quick_repeats=3)
def pxd_fast_half(quick: bool):
    """pxd-fast with every cluster-count mean x 0.5 (half the nominal occupancy)."""
    return _sampler("pxd-fast", 0.5)


@workload("pxd-fast-occ2", baseline="pxd-fast", unit="event", units_per_call=EVENTS_PER_CALL, repeats=10,
          quick_repeats=3)
def pxd_fast_double(quick: bool):
    """pxd-fast with every cluster-count mean x 2 (twice the nominal occupancy)."""
    return _sampler("pxd-fast", 2.0)


@workload("pxd-null", baseline=PXD_BASELINE, unit="event", units_per_call=EVENTS_PER_CALL, repeats=10, quick_repeats=3)
def pxd_null(quick: bool):
    """pxd-null baseline model: per-sensor Poisson pixels, uniform positions, charge spectrum."""
    return _sampler("pxd-null")
