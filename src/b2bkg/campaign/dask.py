"""Sharded generation campaigns on Dask distributed (``b2bkg campaign``).

A campaign generates events ``0 .. N-1`` of one run folder with one master seed, split into ``K``
shards of contiguous events. Shard ``k`` holds events ``start_k .. start_k + n_k - 1`` and is
written by :func:`b2bkg.generate.generate` with ``start=start_k``: every event draws its randomness
from streams of ``(seed, event index)`` and the network always sees the same aligned batches, so the
union of the shards is the same events whatever ``K`` or the number of workers (bitwise, at the
same batch size, device and thread count; each task runs torch on one thread).

The work runs on Dask distributed: a :class:`distributed.LocalCluster` by default (one process per
worker, one thread each), or any scheduler address (``--scheduler tcp://host:8786``: an existing
cluster, or one started by dask-jobqueue on a batch system). Workers must see ``--out`` and the run
folder on a shared file system. Each shard is written atomically (temporary name, renamed when
complete) and ``manifest.json`` (also written atomically, by the client, after every finished shard)
records the campaign and the state of each shard (``pending``/``done``/``failed``, events, bytes,
SHA-256). Re-running the same command skips the shards that are ``done`` and whose file still has
its recorded checksum, so a campaign killed at any moment (SIGKILL included) resumes to the same
output as an uninterrupted run.

Layout of ``--out DIR``::

    manifest.json          schema b2bkg.campaign/1, model, run_dir, weights SHA-256, seed, events, shards
    shard-00000.h5         events start_0 .. start_0 + n_0 - 1
    shard-00001.h5         ...
    merged.h5              optional (``merge=True`` / ``--merge``)

Example:
    >>> from b2bkg.campaign import run_campaign                                   # doctest: +SKIP
    >>> m = run_campaign("runs/pxd-fast", 100_000, 50, "campaign/", seed=3)       # doctest: +SKIP
    >>> m["status"]                                                               # doctest: +SKIP
    'done'
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import numpy as np

from b2bkg.core.errors import B2bkgError, ConfigError, ModelError

__all__ = ["MANIFEST", "MANIFEST_SCHEMA", "plan_shards", "shard_suffix", "run_campaign", "load_manifest", "merge_shards",
           "sha256_file", "generate_shard", "default_workers", "CampaignError"]

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "b2bkg.campaign/1"
# manifest fields that must match for a re-run to resume an existing campaign
_IDENTITY = ("model", "weights_sha256", "seed", "events", "shards", "batch_size", "suffix", "device", "conditions")


class CampaignError(B2bkgError):
    """Some shards of a campaign failed (the manifest records which and why)."""


def plan_shards(n_events: int, n_shards: int, align: int = 1) -> list[tuple[int, int]]:
    """Split events ``0 .. n_events-1`` into ``n_shards`` contiguous ``(start, n)`` ranges.

    With ``align`` > 1 (the sampler's batch size) every shard but the last starts and ends on a
    multiple of ``align``, so no shard computes a batch it then partly drops (``generate`` always
    runs the aligned batch); shard sizes then differ by at most ``align`` events. Without alignment
    (or when there are fewer batches than shards) sizes differ by at most one event.

    Example:
        >>> plan_shards(10, 3)
        [(0, 4), (4, 3), (7, 3)]
        >>> plan_shards(100, 3, align=16)
        [(0, 48), (48, 32), (80, 20)]
    """
    for name, v, lo in (("--events", n_events, 1), ("--shards", n_shards, 1), ("align", align, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ConfigError(f"{name}: {v!r} must be an integer >= {lo}")
    if n_shards > n_events:
        raise ConfigError(f"--shards {n_shards}: more shards than --events {n_events}")
    n_blocks = -(-int(n_events) // int(align))
    if n_blocks < n_shards:
        align, n_blocks = 1, int(n_events)
    base, extra = divmod(n_blocks, int(n_shards))
    sizes = [base + (k < extra) for k in range(n_shards)]  # in blocks of ``align`` events
    ends = np.minimum(np.cumsum(sizes) * int(align), int(n_events))
    starts = np.concatenate([[0], ends[:-1]])
    return [(int(a), int(b - a)) for a, b in zip(starts, ends)]


def shard_suffix(family) -> str:
    """File suffix of shard files for ``family``: its ``output_suffix`` attribute if it has one,
    ``.npy`` for the toy family, otherwise ``.h5`` (the contract HDF5 schema)."""
    return getattr(family, "output_suffix", None) or ".h5"


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def default_workers(n_shards: int) -> int:
    """LocalCluster size: one single-threaded worker per CPU core the process may use, at most one per shard."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(int(n_shards), cores))


def generate_shard(run_dir: str, start: int, n_events: int, seed: int, path: str, batch_size: int | None,
                   device: str, threads: int, command: str, conditions=None) -> dict:
    """Dask task: generate events ``start .. start+n_events-1`` into ``path`` (atomic) on ``threads``
    torch threads; returns ``{n_events, bytes, sha256, seconds, worker}``."""
    import torch

    from b2bkg.core.progress import set_quiet
    from b2bkg.generate import generate

    set_quiet(True)  # one bar over shards lives in the client
    torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    generate(run_dir, int(n_events), int(seed), path, device=device, batch_size=batch_size, command=command,
             start=int(start), conditions=conditions)
    dt = time.perf_counter() - t0
    return {"n_events": int(n_events), "bytes": os.path.getsize(path), "sha256": sha256_file(path),
            "seconds": round(dt, 4), "worker": f"{socket.gethostname()}:{os.getpid()}"}


def load_manifest(out_dir) -> dict:
    """The campaign manifest of ``out_dir`` (ConfigError if missing or unreadable)."""
    p = Path(out_dir) / MANIFEST
    if not p.is_file():
        raise ConfigError(f"--out {out_dir}: no {MANIFEST} (not a campaign folder)")
    try:
        m = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p}: unreadable manifest ({e})") from None
    if m.get("schema") != MANIFEST_SCHEMA:
        raise ConfigError(f"{p}: schema {m.get('schema')!r}, expected {MANIFEST_SCHEMA!r}")
    return m


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    from b2bkg.io.atomic import write_text_atomic

    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    done = sum(s["status"] == "done" for s in manifest["shard_list"])
    manifest["n_done"] = done
    manifest["status"] = "done" if done == len(manifest["shard_list"]) else "running"
    write_text_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def _shard_is_done(out_dir: Path, s: dict, verify: bool) -> bool:
    if s.get("status") != "done":
        return False
    p = out_dir / s["file"]
    if not p.is_file() or p.stat().st_size != s.get("bytes"):
        return False
    return not verify or sha256_file(p) == s.get("sha256")


def run_campaign(run_dir, n_events: int, n_shards: int, out_dir, *, seed: int = 0, scheduler: str | None = None,
                 client=None, n_workers: int | None = None, batch_size: int | None = None, device: str = "cpu",
                 threads_per_task: int = 1, conditions=None, merge: bool = False, verify: bool = True,
                 command: str = "", log=print) -> dict:
    """Generate ``n_events`` from ``run_dir`` in ``n_shards`` shards on Dask; resumable.

    Args:
        run_dir: run folder written by ``b2bkg train`` (must be readable by the workers).
        n_events: total events N; shard files together hold events ``0 .. N-1``.
        n_shards: number of shards K (<= N).
        out_dir: campaign folder (shards + ``manifest.json``; readable/writable by the workers).
        seed: master seed; event ``i`` uses streams of ``(seed, i)`` only.
        scheduler: address of an existing Dask scheduler (``tcp://host:8786``); None: a LocalCluster
            of ``n_workers`` single-threaded worker processes.
        client: an existing ``distributed.Client`` (overrides ``scheduler``; not closed here).
        n_workers: LocalCluster workers (default :func:`default_workers`).
        batch_size: events per sampler call (default: the family's); part of the campaign identity.
        device: torch device of the workers.
        threads_per_task: torch threads per shard task.
        conditions: conditioned models: file or YAML of beam conditions (see ``b2bkg generate``),
            event ``i`` of the campaign takes event ``i`` of a conditions file.
        merge: also write ``merged<suffix>`` holding all events in order (:func:`merge_shards`).
        verify: on resume, re-hash finished shards and regenerate those whose checksum changed.
        command: command line recorded in the files.
        log: where one-line messages (dashboard address, summary) go; None for silence.

    Returns:
        the final manifest (dict).

    Raises:
        ConfigError: bad arguments, or ``out_dir`` holds a different campaign.
        CampaignError: some shards failed (the others are kept; re-run to retry).
    """
    from b2bkg.core.progress import progress
    from b2bkg.generate import load_run

    log = log or (lambda *_: None)
    plan_shards(n_events, n_shards)  # argument checks before loading anything
    if threads_per_task < 1:
        raise ConfigError(f"threads_per_task: {threads_per_task} must be >= 1")
    run = load_run(run_dir, "cpu")
    fam = run.family
    if fam.cannot_generate:
        raise ModelError(f"model {fam.name} ({run_dir}) cannot generate events: {fam.cannot_generate}")
    if isinstance(conditions, (str, os.PathLike)):
        conditions = str(Path(conditions).resolve())  # workers may run elsewhere
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = shard_suffix(fam)
    ident = {"model": fam.name, "weights_sha256": sha256_file(run.weights_file), "seed": int(seed),
             "events": int(n_events), "shards": int(n_shards), "batch_size": int(batch_size or fam.generate_batch_size),
             "suffix": suffix, "device": str(device), "conditions": None if conditions is None else str(conditions)}
    del run
    shards = plan_shards(n_events, n_shards, align=ident["batch_size"])
    manifest = None
    if (out / MANIFEST).is_file():
        old = load_manifest(out)
        diff = [k for k in _IDENTITY if old.get(k) != ident[k]]
        if diff:
            k = diff[0]
            raise ConfigError(f"--out {out}: holds a campaign with {k}={old.get(k)!r}, this one has {k}={ident[k]!r} "
                              "(use another --out folder, or the same arguments to resume)")
        manifest = old
    if manifest is None:
        manifest = {"schema": MANIFEST_SCHEMA, **ident, "run_dir": str(Path(run_dir).resolve()), "command": command,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "shard_list": [{"index": k, "file": f"shard-{k:05d}{suffix}", "start": s, "n_events": n,
                                    "status": "pending"} for k, (s, n) in enumerate(shards)]}
    todo = [s for s in manifest["shard_list"] if not _shard_is_done(out, s, verify)]
    for s in todo:
        s.update(status="pending")
        for key in ("sha256", "bytes", "seconds", "worker", "error"):
            s.pop(key, None)
    _write_manifest(out, manifest)
    n_skip = len(shards) - len(todo)
    if n_skip:
        log(f"campaign: {n_skip}/{len(shards)} shards already done in {out}, {len(todo)} to go")
    if todo:
        _run_on_dask(manifest, todo, out, run_dir, seed, batch_size, device, threads_per_task, command, conditions,
                     scheduler, client, n_workers, log, progress)
    failed = [s for s in manifest["shard_list"] if s["status"] != "done"]
    if failed:
        s = failed[0]
        raise CampaignError(f"campaign {out}: {len(failed)} shard(s) failed, e.g. {s['file']}: {s.get('error', '?')} "
                            "(re-run the same command to retry them)")
    if merge:
        merge_shards(out)
    tot = sum(s.get("seconds", 0.0) for s in manifest["shard_list"])
    log(f"campaign: {n_events} events in {len(shards)} shards in {out} (sum of shard times {tot:.1f} s)")
    return manifest


def _run_on_dask(manifest, todo, out: Path, run_dir, seed, batch_size, device, threads, command, conditions,
                 scheduler, client, n_workers, log, progress) -> None:
    """Submit the ``todo`` shards, update the manifest as each finishes (as completed)."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConfigError("b2bkg campaign needs Dask distributed: pip install 'b2bkg[prod]'") from None
    cluster = own_client = None
    try:
        if client is None:
            if scheduler:
                try:
                    client = own_client = Client(scheduler, timeout="20s")
                except (OSError, TimeoutError) as e:
                    raise ConfigError(f"--scheduler {scheduler}: cannot connect ({type(e).__name__}: {e})") from None
            else:
                nw = default_workers(len(todo)) if n_workers is None else n_workers
                if nw < 1:
                    raise ConfigError(f"n_workers: {nw} must be >= 1")
                # dashboard on a free port (":0"): a fixed 8787 clashes between users of one machine
                cluster = LocalCluster(n_workers=nw, threads_per_worker=1, processes=True, dashboard_address=":0")
                client = own_client = Client(cluster)
        dash = getattr(client, "dashboard_link", None)
        log(f"campaign: Dask scheduler {client.scheduler.address}; dashboard "
            f"{dash if _has_dashboard() else 'not available (pip install bokeh)'}")
        rd = str(Path(run_dir).resolve())
        futures = {}
        token = manifest["weights_sha256"][:8]
        for s in todo:
            f = client.submit(generate_shard, rd, s["start"], s["n_events"], manifest["seed"], str(out / s["file"]),
                              batch_size, device, threads, command, conditions, key=f"b2bkg-shard-{token}-{manifest['seed']}-{s['index']}",
                              pure=False)
            futures[f] = s
        bar = progress(total=len(manifest["shard_list"]), desc=f"campaign {manifest['model']}", unit="shard",
                       initial=len(manifest["shard_list"]) - len(todo))
        for fut in as_completed(list(futures)):
            s = futures[fut]
            try:
                res = fut.result()
            except Exception as e:  # a failed shard is recorded; the others go on
                s.update(status="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            else:
                if res["n_events"] != s["n_events"]:
                    s.update(status="failed", error=f"wrote {res['n_events']} events, expected {s['n_events']}")
                else:
                    s.update(status="done", **res)
            _write_manifest(out, manifest)
            bar.update(1)
        bar.close()
    finally:
        if own_client is not None:
            own_client.close()
        if cluster is not None:
            cluster.close()


def _has_dashboard() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def merge_shards(out_dir, out=None, chunk: int = 1000) -> Path:
    """Concatenate the finished shards of a campaign, in event order, into one file.

    Contract files (``.h5``/``.root``) are copied group by group in chunks of ``chunk`` events;
    ``.npy`` shards (toy family) are concatenated. Default output ``<out_dir>/merged<suffix>``.
    """
    out_dir = Path(out_dir)
    m = load_manifest(out_dir)
    shards = sorted(m["shard_list"], key=lambda s: s["start"])
    missing = [s["file"] for s in shards if s["status"] != "done" or not (out_dir / s["file"]).is_file()]
    if missing:
        raise CampaignError(f"merge {out_dir}: {len(missing)} shard(s) not done, e.g. {missing[0]} (run the campaign first)")
    target = Path(out) if out is not None else out_dir / f"merged{m['suffix']}"
    paths = [out_dir / s["file"] for s in shards]
    if m["suffix"] == ".npy":
        from b2bkg.io.atomic import atomic_path

        x = np.concatenate([np.load(p, allow_pickle=False) for p in paths])
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, x)
        return target
    from b2bkg.io import FileWriter, open_file

    attrs = {"model": m["model"], "campaign_shards": m["shards"], "generate_start": 0}
    with FileWriter(target, seed=m["seed"], command=m.get("command", ""), attrs=attrs) as w:
        for p in paths:
            with open_file(p) as f:
                for a in range(0, f.n_events, chunk):
                    b = min(f.n_events, a + chunk)
                    w.append(**{g: f.read(g, a, b) for g in f.groups})
    return target
