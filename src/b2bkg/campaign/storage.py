"""Storage and cost accounting (``b2bkg storage RUN_DIR...``): what replacing overlay files costs and saves.

Background overlay ships recorded random-trigger events to every production site. A generative
model replaces the files of its detector by a model file shipped once plus CPU time per event.
For each model this module states, against two baselines side by side:

* **seed**: the seed paper's ~200 kB per overlay event, about half of it PXD
  (``SEED_OVERLAY_BYTES_PER_EVENT``, ``SEED_PXD_FRACTION``; seed 002). A PXD model saves the PXD
  half (100 kB/event). For ECL the seed gives no share of its own: the other half (100 kB) is
  *all* non-PXD detectors, so the ECL number is an upper bound (marked ``<=``).
* **contract**: our own contract files, measured: a few truth events of each pillar are simulated
  (:func:`b2bkg.pxd.simulate.simulate_pxd`, :func:`b2bkg.ecl.simulate.simulate_ecl`) and written
  with the project's compressed writers to HDF5 and ROOT; bytes/event is the marginal size
  ``(size(2n) - size(n)) / n``, so file headers do not count.

and per model: the model file size (the weights file ``generate`` loads + ``config.yaml``), the
break-even number of events (model bytes / bytes saved per event: below it, shipping the files is
cheaper), CPU seconds and peak memory per event to generate on one thread (measured in a fresh
subprocess by :func:`measure_generation`: ``generate`` of a few events into a file, after a
one-event warm-up), and CPU seconds per MB saved.

Example:
    >>> from b2bkg.campaign.storage import storage_table, format_storage_table     # doctest: +SKIP
    >>> print(format_storage_table(storage_table(["runs/pxd-fast", "runs/ecl-gan"])))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from b2bkg.core.errors import B2bkgError, ConfigError, ModelError

__all__ = ["SEED_OVERLAY_BYTES_PER_EVENT", "SEED_PXD_FRACTION", "seed_bytes_per_event", "measure_contract_bytes",
           "model_bytes", "measure_generation", "storage_table", "format_storage_table"]

SEED_OVERLAY_BYTES_PER_EVENT = 200e3  # seed 002: "a single event ... has a size of about 200 kB"
SEED_PXD_FRACTION = 0.5  # seed 002: PXD generation "would reduce the storage demands ... by a factor two"
PILLARS = ("pxd", "ecl")
FORMATS = (".h5", ".root")


def seed_bytes_per_event(pillar: str) -> tuple[float | None, bool]:
    """Seed baseline bytes/event replaced by a model of ``pillar`` -> ``(bytes, is_upper_bound)``."""
    if pillar == "pxd":
        return SEED_PXD_FRACTION * SEED_OVERLAY_BYTES_PER_EVENT, False
    if pillar == "ecl":
        return (1 - SEED_PXD_FRACTION) * SEED_OVERLAY_BYTES_PER_EVENT, True
    return None, False


def _simulate(pillar: str, n: int, seed: int, out: Path) -> Path:
    if pillar == "pxd":
        from b2bkg.pxd.simulate import simulate_pxd

        return simulate_pxd(n, seed, out)
    from b2bkg.ecl.simulate import simulate_ecl

    return simulate_ecl(n, seed, out)


def measure_contract_bytes(n_events: int = 3, seed: int = 1, pillars=PILLARS, formats=FORMATS, workdir=None) -> dict:
    """Marginal compressed bytes per truth event of each pillar in each format.

    Simulates ``2 * n_events`` truth events per pillar once, writes the first ``n_events`` and all
    of them with :class:`b2bkg.io.FileWriter` in every format and returns
    ``{pillar: {format: bytes_per_event}}`` with bytes/event = (size(2n) - size(n)) / n.
    """
    from b2bkg.io import FileWriter, open_file

    if n_events < 1:
        raise ConfigError(f"--truth-events: {n_events} must be >= 1")
    bad = [p for p in pillars if p not in PILLARS] + [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"{bad[0]!r}: pillars must be in {PILLARS}, formats in {FORMATS}")
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="b2bkg-storage-", dir=workdir) as td:
        for pillar in pillars:
            src = _simulate(pillar, 2 * n_events, seed, Path(td) / f"{pillar}-truth.h5")
            out[pillar] = {}
            with open_file(src) as f:
                parts = {n: {g: f.read(g, 0, n) for g in f.groups} for n in (n_events, 2 * n_events)}
                meta_seed = f.meta.get("seed")
            for fmt in formats:
                sizes = {}
                for n, groups in parts.items():
                    p = Path(td) / f"{pillar}-{n}{fmt}"
                    with FileWriter(p, seed=meta_seed) as w:
                        w.append(**groups)
                    sizes[n] = p.stat().st_size
                out[pillar][fmt.lstrip(".")] = (sizes[2 * n_events] - sizes[n_events]) / n_events
    return out


def model_bytes(run_dir) -> dict:
    """Bytes a site needs to generate: the weights file ``generate`` loads (auto) + ``config.yaml``."""
    from b2bkg.generate import load_run

    run = load_run(run_dir, "cpu")
    w = run.weights_file.stat().st_size
    c = (Path(run_dir) / "config.yaml").stat().st_size
    return {"model": run.family.name, "outputs": list(run.family.outputs), "weights_file": run.weights_file.name,
            "weights_bytes": w, "config_bytes": c, "bytes": w + c,
            "cannot_generate": run.family.cannot_generate, "generate_batch_size": run.family.generate_batch_size}


def measure_generation(run_dir, n_events: int = 4, seed: int = 1, timeout_s: float = 600) -> dict:
    """CPU time and memory per generated event, on one thread, in a fresh Python process.

    The child loads the run, generates one warm-up event, resets the kernel's RSS high-water mark,
    then generates ``n_events`` (events 1..n) with :func:`b2bkg.generate.generate` into a temporary
    file (``.npy`` for the toy family, else ``.h5``). Returns ``cpu_s_per_event`` (user+system CPU of
    the process), ``wall_s_per_event``, ``peak_rss_mb`` (high-water mark of the process while
    generating: what a job slot needs), ``peak_rss_increase_mb`` (above the RSS after loading),
    ``load_s`` and ``output_bytes_per_event``.
    """
    if n_events < 1:
        raise ConfigError(f"--gen-events: {n_events} must be >= 1")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "B2BKG_QUIET": "1"}
    code = ("import sys, json; from b2bkg.campaign.storage import _measure_child; "
            "print('B2BKG_RESULT ' + json.dumps(_measure_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))")
    try:
        p = subprocess.run([sys.executable, "-c", code, str(run_dir), str(n_events), str(seed)], env=env,
                           capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ModelError(f"--model {run_dir}: generating {n_events} events took longer than {timeout_s:g} s") from None
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("B2BKG_RESULT ")), None)
    if p.returncode != 0 or line is None:
        err = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"--model {run_dir}: generation measurement failed ({err})")
    return json.loads(line.split(" ", 1)[1])


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _measure_child(run_dir: str, n_events: int, seed: int) -> dict:
    """Runs in the subprocess of :func:`measure_generation`."""
    import resource

    import torch

    from b2bkg.campaign.dask import shard_suffix
    from b2bkg.generate import generate, load_run

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    fam = load_run(run_dir, "cpu").family
    load_s = time.perf_counter() - t0
    suffix = shard_suffix(fam)
    with tempfile.TemporaryDirectory(prefix="b2bkg-storage-gen-") as td:
        generate(run_dir, 1, seed, Path(td) / f"warm{suffix}")  # imports, lazy init, first-call costs
        rss0 = _status_mb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            method = "vmhwm-reset"
        except OSError:
            method = "ru_maxrss"
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        w0 = time.perf_counter()
        out = generate(run_dir, n_events, seed, Path(td) / f"gen{suffix}", start=1)
        wall = time.perf_counter() - w0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        size = out.stat().st_size
    peak = _status_mb("VmHWM") if method == "vmhwm-reset" else r1.ru_maxrss / 1024
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"n_events": n_events, "cpu_s_per_event": cpu / n_events, "wall_s_per_event": wall / n_events,
            "peak_rss_mb": peak, "peak_rss_increase_mb": None if peak is None or rss0 is None else max(0.0, peak - rss0),
            "memory_method": method, "load_s": load_s, "output_bytes_per_event": size / n_events, "threads": 1}


def _pillar(outputs) -> str | None:
    hit = [p for p in PILLARS if p in outputs]
    return hit[0] if len(hit) == 1 else None


def storage_table(run_dirs, *, truth_events: int = 3, gen_events: int = 4, seed: int = 1, formats=FORMATS,
                  contract: dict | None = None, log=None) -> dict:
    """Cost and savings of replacing overlay files by each model of ``run_dirs`` (JSON-able dict).

    Args:
        run_dirs: run folders (any family; models that do not write PXD/ECL get no baseline).
        truth_events: n of :func:`measure_contract_bytes` (2n truth events are simulated per pillar).
        gen_events: events generated per model by :func:`measure_generation`.
        seed: seed of the truth simulation and the generation.
        formats: contract file formats measured.
        contract: precomputed :func:`measure_contract_bytes` result (skips the simulation).
        log: callable for progress messages (None: silent).

    Returns:
        ``{"baselines": {...}, "models": [row, ...]}``; each row holds ``model``, ``run_dir``,
        ``pillar``, ``model_bytes``, the generation measurement and, per baseline
        (``seed``, ``contract_h5``, ``contract_root``), ``saved_bytes_per_event``,
        ``break_even_events`` and ``cpu_s_per_saved_mb``.
    """
    log = log or (lambda *_: None)
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise ConfigError("storage: give at least one RUN_DIR")
    infos, failed = [], []
    for r in run_dirs:  # one unusable run folder is reported in the table, not fatal for the others
        try:
            infos.append(model_bytes(r))
        except B2bkgError as e:
            failed.append((r, e))
            infos.append(None)
    if len(failed) == len(run_dirs):
        raise failed[0][1]
    pillars = sorted({p for i in infos if i and (p := _pillar(i["outputs"]))})
    if contract is None:
        contract = {}
        if pillars:
            log(f"storage: simulating {2 * truth_events} truth events of {', '.join(pillars)} for the contract baseline")
            contract = measure_contract_bytes(truth_events, seed, pillars, formats)
    baselines = {"seed": {"bytes_per_event_total": SEED_OVERLAY_BYTES_PER_EVENT, "pxd_fraction": SEED_PXD_FRACTION,
                          "source": "seed 002: ~200 kB per overlay event, PXD about half",
                          "note": "ECL: upper bound (the non-PXD half is all other detectors)"},
                 "contract": {"bytes_per_event": contract, "truth_events": 2 * truth_events,
                              "method": "marginal compressed size (size(2n) - size(n)) / n, b2bkg FileWriter"}}
    rows = []
    for rd, info in zip(run_dirs, infos):
        if info is None:
            err = next(str(e) for r, e in failed if r == rd)
            rows.append({"model": "?", "run_dir": str(rd), "pillar": None, "model_bytes": None, "baselines": {},
                         "generation": {"error": f"cannot load the run folder: {err}"}})
            continue
        pillar = _pillar(info["outputs"])
        row = {"model": info["model"], "run_dir": str(rd), "pillar": pillar, "model_bytes": info["bytes"],
               "weights_bytes": info["weights_bytes"], "config_bytes": info["config_bytes"], "baselines": {}}
        gen = None
        if info["cannot_generate"]:
            row["generation"] = {"error": f"cannot generate: {info['cannot_generate']}"}
        else:
            log(f"storage: generating {gen_events} events of {rd} on 1 thread")
            try:
                gen = measure_generation(rd, gen_events, seed)
                row["generation"] = gen
            except ModelError as e:
                row["generation"] = {"error": str(e)}
        cands = {}
        if pillar is not None:
            sb, upper = seed_bytes_per_event(pillar)
            cands["seed"] = (sb, upper)
            for fmt, b in contract.get(pillar, {}).items():
                cands[f"contract_{fmt}"] = (b, False)
        for name, (saved, upper) in cands.items():
            cpu = gen.get("cpu_s_per_event") if gen else None
            row["baselines"][name] = {
                "saved_bytes_per_event": saved, "upper_bound": upper,
                "break_even_events": info["bytes"] / saved if saved else None,
                "cpu_s_per_saved_mb": cpu / (saved / 1e6) if cpu is not None and saved else None}
        rows.append(row)
    return {"baselines": baselines, "models": rows, "seed": seed, "gen_events": gen_events,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _fmt_bytes(b) -> str:
    if b is None:
        return "-"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= f:
            return f"{b / f:.3g} {unit}"
    return f"{b:.0f} B"


def _fmt(v, spec=".3g", none="-") -> str:
    return none if v is None else format(v, spec)


def format_storage_table(result: dict) -> str:
    """Plain-text table of :func:`storage_table`: one row per model, the baselines side by side."""
    names = ["seed", *sorted({k for r in result["models"] for k in r["baselines"] if k != "seed"})]
    head = ["model", "pillar", "model size", "CPU s/evt", "peak MB"]
    for n in names:
        short = n.replace("contract_", "")
        head += [f"{short}: saved/evt", f"{short}: break-even", f"{short}: CPU s/MB"]
    rows = []
    for r in result["models"]:
        g = r.get("generation") or {}
        cells = [r["model"], r["pillar"] or "-", _fmt_bytes(r["model_bytes"]),
                 _fmt(g.get("cpu_s_per_event")) if "error" not in g else "n/a", _fmt(g.get("peak_rss_mb"), ".0f")]
        for n in names:
            b = r["baselines"].get(n)
            if b is None:
                cells += ["-", "-", "-"]
                continue
            le = "<=" if b["upper_bound"] else ""
            cells += [le + _fmt_bytes(b["saved_bytes_per_event"]), (">=" if le else "") + _fmt(b["break_even_events"], ".3g"),
                      (">=" if le else "") + _fmt(b["cpu_s_per_saved_mb"])]
        rows.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    c = result["baselines"]["contract"]
    notes = [f"seed baseline: {result['baselines']['seed']['source']}; {result['baselines']['seed']['note']}",
             f"contract baseline: measured on {c['truth_events']} simulated truth events per pillar, "
             + ", ".join(f"{p} {f} {_fmt_bytes(b)}/evt" for p, d in c["bytes_per_event"].items() for f, b in d.items()),
             "model size = weights file used by generate + config.yaml; break-even = model size / saved bytes per event "
             "(events); CPU s/MB = CPU seconds to generate the events that replace 1 MB of overlay files",
             f"CPU s/evt and peak MB (RSS high-water mark of the process): generate of {result['gen_events']} events "
             "on 1 thread in a fresh process"]
    errs = [f"{r['model']} ({r['run_dir']}): {r['generation']['error']}" for r in result["models"]
            if "error" in (r.get("generation") or {})]
    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows), "", *notes, *errs])
