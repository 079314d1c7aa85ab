"""Side-by-side benchmark harness: named workloads timed in ONE process, with ratios to a baseline.

A workload is a *setup* function registered with :func:`workload`. Setup builds whatever is not to
be timed (models, input data) and returns a zero-argument callable that does one unit of timed work
and returns how many units it processed (e.g. events; ``None`` means ``units_per_call``)::

    @workload("pxd-wgan-paper", unit="event", target=Target(reference="7.7-10.4 s/event"))
    def paper_generator(quick: bool):
        g = Generator(WganConfig()).eval()
        z = torch.randn(40, 96)
        def run():
            with torch.inference_mode():
                dense_to_digits(to_adu(crop_rows(g(z))).view(1, 40, 250, 768))
            return 1
        return run

Setup raises :class:`SkipWorkload` when something it needs is missing (the reason is printed).

Measurement of one workload (:func:`measure`):
  1. setup (untimed);
  2. warm-up calls (untimed; the first one also measures memory, see below);
  3. ``repeats`` timed calls with ``time.perf_counter``; per-unit times -> median, IQR
     (q75 - q25), MAD (median absolute deviation), min; rate = units / median time.
Memory, measured during the first warm-up call (so the tracing overhead never enters a timing):
  * ``peak_traced_mb``: peak of Python-level allocations by ``tracemalloc`` (numpy arrays are
    traced; torch tensor storage is NOT);
  * ``peak_rss_mb``: peak resident set size above the RSS before the call, covering torch, BLAS
    and oneDNN buffers. On Linux the kernel's high-water mark is reset first (write "5" to
    ``/proc/self/clear_refs``) and read back from ``VmHWM`` in ``/proc/self/status``
    (``memory_method = "vmhwm-reset"``); elsewhere the increase of ``ru_maxrss`` is used
    (``"ru_maxrss-delta"``), which reads 0 when an earlier workload had a higher peak.
Every workload names a ``baseline`` (another workload) that is always run in the same invocation;
``ratio`` = baseline time per unit / this time per unit (> 1: this one is faster).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

__all__ = ["Target", "Workload", "Result", "Registry", "REGISTRY", "workload", "SkipWorkload", "measure",
           "run_all", "format_table", "to_json", "resolve"]


class SkipWorkload(Exception):
    """Raised by a workload's setup when it cannot run here (missing module, data, device)."""


@dataclass(frozen=True)
class Target:
    """An absolute target (from an issue) shown next to the measured number.

    Attributes:
        min_rate: units per second required (e.g. 10 events/s).
        max_time_s: seconds per unit allowed.
        min_ratio: speed-up over the baseline required (baseline time / this time).
        reference: free text shown in the table (a published number to compare with).
        source: where the target comes from (issue number, paper).
    """

    min_rate: float | None = None
    max_time_s: float | None = None
    min_ratio: float | None = None
    reference: str = ""
    source: str = ""

    def describe(self, unit: str) -> str:
        parts = []
        if self.min_rate is not None:
            parts.append(f">= {self.min_rate:g} {unit}s/s")
        if self.max_time_s is not None:
            parts.append(f"<= {self.max_time_s:g} s/{unit}")
        if self.min_ratio is not None:
            parts.append(f">= {self.min_ratio:g}x baseline")
        if self.reference:
            parts.append(f"ref {self.reference}")
        return "; ".join(parts)

    def met(self, rate: float, time_s: float, ratio: float | None) -> bool | None:
        """True/False if the target has a checkable part, None if it is only a reference."""
        checks = []
        if self.min_rate is not None:
            checks.append(rate >= self.min_rate)
        if self.max_time_s is not None:
            checks.append(time_s <= self.max_time_s)
        if self.min_ratio is not None and ratio is not None:
            checks.append(ratio >= self.min_ratio)
        return all(checks) if checks else None


@dataclass(frozen=True)
class Workload:
    name: str
    setup: Callable[[bool], Callable[[], int | float | None]]
    baseline: str | None = None
    target: Target | None = None
    unit: str = "event"
    units_per_call: float = 1.0
    repeats: int = 5
    warmup: int = 1
    quick_repeats: int = 2
    quick_warmup: int = 1
    description: str = ""


@dataclass
class Result:
    name: str
    unit: str
    status: str  # "ok" | "skipped" | "error"
    message: str = ""
    description: str = ""
    baseline: str | None = None
    repeats: int = 0
    times_s: list[float] = field(default_factory=list)  # per unit, one per repeat
    median_s: float | None = None
    iqr_s: float | None = None
    mad_s: float | None = None
    min_s: float | None = None
    rate: float | None = None  # units per second at the median
    peak_traced_mb: float | None = None
    peak_rss_mb: float | None = None
    memory_method: str = ""
    ratio: float | None = None  # baseline median / this median (> 1: faster than the baseline)
    target: str = ""
    target_met: bool | None = None


class Registry:
    """Named workloads; :data:`REGISTRY` is the one ``benchmarks/run.py`` uses."""

    def __init__(self):
        self.workloads: dict[str, Workload] = {}

    def workload(self, name: str, *, baseline: str | None = None, target: Target | None = None, unit: str = "event",
                 units_per_call: float = 1.0, repeats: int = 5, warmup: int = 1, quick_repeats: int = 2,
                 quick_warmup: int = 1, description: str = ""):
        """Decorator registering a setup function ``setup(quick: bool) -> run() -> n_units | None``."""
        if repeats < 1 or quick_repeats < 1 or warmup < 0 or quick_warmup < 0:
            raise ValueError(f"workload {name!r}: repeats must be >= 1 and warmup >= 0")

        def deco(setup):
            if name in self.workloads:
                raise ValueError(f"workload {name!r} is registered twice")
            self.workloads[name] = Workload(name, setup, baseline, target, unit, units_per_call, repeats, warmup,
                                            quick_repeats, quick_warmup, description or (setup.__doc__ or "").strip().split("\n")[0])
            return setup

        return deco

    def __contains__(self, name):
        return name in self.workloads

    def names(self) -> list[str]:
        return list(self.workloads)


REGISTRY = Registry()
workload = REGISTRY.workload


def resolve(registry: Registry, only: list[str] | None) -> list[str]:
    """Names to run: ``only`` (or everything) plus, transitively, their baselines, baselines first."""
    names = list(only) if only else registry.names()
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise KeyError(f"--only {unknown[0]!r}: no such workload (known: {', '.join(registry.names())})")
    order: list[str] = []

    def add(n, chain=()):
        if n in chain:
            raise ValueError(f"baseline cycle: {' -> '.join((*chain, n))}")
        w = registry.workloads[n]
        if w.baseline is not None:
            if w.baseline not in registry:
                raise KeyError(f"workload {n!r}: baseline {w.baseline!r} is not registered")
            add(w.baseline, (*chain, n))
        if n not in order:
            order.append(n)

    for n in names:
        add(n)
    return order


# -- memory ---------------------------------------------------------------------------------------

def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _vmhwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _vmhwm_mb() is not None
    except OSError:
        return False


def _maxrss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def _measured_call(run) -> tuple[float, float, float | None, str]:
    """Call ``run`` once under tracemalloc and RSS tracking -> (n_units or nan, traced MB, rss MB, method)."""
    gc.collect()
    before = _rss_mb()
    if before is not None and _reset_hwm():
        method = "vmhwm-reset"
    else:
        method, before = "ru_maxrss-delta", _maxrss_mb()
    tracemalloc.start()
    try:
        n = run()
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    after = _vmhwm_mb() if method == "vmhwm-reset" else _maxrss_mb()
    rss = None if after is None or before is None else max(0.0, after - before)
    return n, traced_peak / 2**20, rss, method


# -- measurement ----------------------------------------------------------------------------------

def measure(w: Workload, quick: bool = False) -> Result:
    """Set up and time one workload (see the module docstring for what is measured)."""
    res = Result(w.name, w.unit, "ok", description=w.description, baseline=w.baseline,
                 target=w.target.describe(w.unit) if w.target else "")
    try:
        run = w.setup(quick)
    except SkipWorkload as e:
        res.status, res.message = "skipped", str(e)
        return res
    except Exception as e:  # a broken workload must not take the others down
        res.status, res.message = "error", f"setup failed: {type(e).__name__}: {e}"
        return res
    warmup = w.quick_warmup if quick else w.warmup
    repeats = w.quick_repeats if quick else w.repeats
    times: list[float] = []
    try:
        if warmup == 0:  # memory is still measured once, on an extra untimed call
            warmup = 1
        for i in range(warmup):
            if i == 0:
                _, res.peak_traced_mb, res.peak_rss_mb, res.memory_method = _measured_call(run)
            else:
                run()
        for _ in range(repeats):
            gc.collect()
            t0 = time.perf_counter()
            n = run()
            dt = time.perf_counter() - t0
            n = w.units_per_call if n is None else float(n)
            if not n > 0:
                raise ValueError(f"run() reported {n} units processed")
            times.append(dt / n)
    except SkipWorkload as e:
        res.status, res.message = "skipped", str(e)
        return res
    except Exception as e:
        res.status, res.message = "error", f"{type(e).__name__}: {e}"
        return res
    res.repeats = len(times)
    res.times_s = times
    res.median_s = statistics.median(times)
    if len(times) >= 2:
        q = statistics.quantiles(times, n=4, method="inclusive")
        res.iqr_s = q[2] - q[0]
    else:
        res.iqr_s = 0.0
    res.mad_s = statistics.median(abs(t - res.median_s) for t in times)
    res.min_s = min(times)
    res.rate = 1.0 / res.median_s if res.median_s > 0 else float("inf")
    return res


def run_all(registry: Registry, only: list[str] | None = None, quick: bool = False, log=print) -> list[Result]:
    """Run the selected workloads and their baselines in this process; fill ratios and targets."""
    order = resolve(registry, only)
    results: dict[str, Result] = {}
    for name in order:
        w = registry.workloads[name]
        log(f"[bench] {name} ...")
        t0 = time.perf_counter()
        r = measure(w, quick=quick)
        msg = f"{r.median_s:.4g} s/{r.unit}" if r.status == "ok" else f"{r.status}: {r.message}"
        log(f"[bench] {name}: {msg} ({time.perf_counter() - t0:.1f} s in all)")
        results[name] = r
    for name, r in results.items():
        w = registry.workloads[name]
        b = results.get(w.baseline) if w.baseline else None
        if r.status == "ok" and b is not None and b.status == "ok" and r.median_s > 0:
            r.ratio = b.median_s / r.median_s
        elif r.status == "ok" and w.baseline is None:
            r.ratio = 1.0
        if r.status == "ok" and w.target is not None:
            r.target_met = w.target.met(r.rate, r.median_s, r.ratio)
    return [results[n] for n in order]


# -- output ---------------------------------------------------------------------------------------

def _fmt(v, spec=".3g", none="-"):
    return none if v is None else format(v, spec)


def format_table(results: list[Result]) -> str:
    """Plain-text table: time per unit (median, IQR), rate, memory, ratio to baseline, target."""
    head = ["workload", "median", "IQR", "rate", "rss MB", "traced MB", "vs baseline", "target", "met"]
    rows = []
    for r in results:
        if r.status != "ok":
            rows.append([r.name, r.status.upper(), "", "", "", "", "", r.target, r.message])
            continue
        ratio = "baseline" if r.baseline is None else (f"{r.ratio:.3g}x {r.baseline}" if r.ratio is not None else f"? {r.baseline}")
        rows.append([
            r.name, f"{r.median_s:.4g} s/{r.unit}", f"{r.iqr_s:.2g} s", f"{r.rate:.3g} /s",
            _fmt(r.peak_rss_mb, ".0f"), _fmt(r.peak_traced_mb, ".1f"), ratio, r.target,
            {True: "yes", False: "NO", None: ""}[r.target_met],
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(wd) for c, wd in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * wd for wd in widths]), *(line(r) for r in rows)])


def environment(threads: int | None = None) -> dict:
    """Where the numbers were taken: CPU, Python, torch/numpy versions, thread count."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpu": cpu,
           "cpu_count": os.cpu_count(), "python": platform.python_version(), "threads": threads,
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    for mod in ("numpy", "torch"):
        m = sys.modules.get(mod)
        if m is not None:
            env[mod] = getattr(m, "__version__", "?")
    if "torch" in sys.modules:
        env["torch_threads"] = sys.modules["torch"].get_num_threads()
    return env


def to_json(results: list[Result], meta: dict | None = None) -> dict:
    return {"meta": meta or {}, "results": [asdict(r) for r in results]}


def write_json(data: dict, path) -> None:
    """Write atomically (temporary sibling, then rename)."""
    from pathlib import Path

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, p)
