"""Campaign scaling: events/s of a Dask campaign with 1 and 2 single-threaded workers, side by side.

Both workloads generate the same campaign (``CAMPAIGN_EVENTS`` events in ``CAMPAIGN_SHARDS`` shards,
contract HDF5 files) on a LocalCluster started in setup (untimed); one timed call = one full
``run_campaign`` into a fresh folder (scheduling, generation, file writing, checksums, manifest).
``ratio`` of ``campaign-2-workers`` = speed-up over 1 worker; scaling efficiency = ratio / 2
(1.0 = perfect). On a machine with fewer than 2 free cores the efficiency says so.

Model: ``ecl-cov`` fitted on 4 simulated ECL events (a real detector model that fits in a second),
or the run folder in ``B2BKG_BENCH_CAMPAIGN_RUN`` (e.g. a pxd-fast run).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from harness import SkipWorkload, workload

CAMPAIGN_BASELINE = "campaign-1-worker"
_state: dict = {}


def _run_folder(quick: bool) -> Path:
    """The run folder benchmarked (trained once per process)."""
    if "run" in _state:
        return _state["run"]
    env = os.environ.get("B2BKG_BENCH_CAMPAIGN_RUN")
    if env:
        run = Path(env)
        if not (run / "config.yaml").is_file():
            raise SkipWorkload(f"B2BKG_BENCH_CAMPAIGN_RUN={env}: not a run folder")
    else:
        try:
            from b2bkg.core.progress import set_quiet
            from b2bkg.ecl.simulate import simulate_ecl
            from b2bkg.training import train
        except ImportError as e:
            raise SkipWorkload(f"cannot import the ECL simulator / trainer ({e})") from None
        set_quiet(True)
        tmp = Path(tempfile.mkdtemp(prefix="b2bkg-bench-campaign-"))
        atexit.register(shutil.rmtree, tmp, True)
        simulate_ecl(4, 1, tmp / "ecl.h5")
        run = train("ecl-cov", tmp / "ecl.h5", tmp / "run", seed=0)
    _state["run"] = run
    return run


def _close_cluster() -> None:
    c = _state.pop("cluster", None)
    if c is not None:
        client, cluster = c
        client.close()
        cluster.close()


atexit.register(_close_cluster)


def _campaign(n_workers: int, quick: bool):
    try:
        import distributed

        from b2bkg.campaign.dask import run_campaign
    except ImportError as e:
        raise SkipWorkload(f"Dask distributed is not installed ({e})") from None
    run = _run_folder(quick)
    n_events, n_shards = (48, 4) if quick else (160, 8)
    _close_cluster()  # one cluster at a time
    cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = distributed.Client(cluster)
    _state["cluster"] = (client, cluster)
    root = Path(tempfile.mkdtemp(prefix=f"b2bkg-bench-campaign-{n_workers}w-"))
    atexit.register(shutil.rmtree, root, True)
    calls = [0]

    def go():
        calls[0] += 1
        out = root / f"c{calls[0]}"
        m = run_campaign(run, n_events, n_shards, out, seed=1, client=client, log=None)
        if m["status"] != "done":
            raise RuntimeError(f"campaign ended {m['status']}")
        shutil.rmtree(out)
        return n_events

    return go


@workload(CAMPAIGN_BASELINE, unit="event", repeats=3, warmup=1, quick_repeats=2, quick_warmup=1)
def campaign_1_worker(quick: bool):
    """Dask campaign on a LocalCluster of 1 worker (1 thread): events/s, shard files included."""
    return _campaign(1, quick)


@workload("campaign-2-workers", baseline=CAMPAIGN_BASELINE, unit="event", repeats=3, warmup=1, quick_repeats=2,
          quick_warmup=1)
def campaign_2_workers(quick: bool):
    """Same campaign on 2 workers: ratio = speed-up over 1 worker; scaling efficiency = ratio / 2."""
    return _campaign(2, quick)
