#!/usr/bin/env python
"""Run the b2bkg benchmarks side by side in one process and print ratios (table + JSON).

    python benchmarks/run.py                      # everything, default repeats
    python benchmarks/run.py --quick              # fewer repeats (the numbers are noisier)
    python benchmarks/run.py --only pxd-truth-sim --out results.json
    python benchmarks/run.py --list

Workloads live in ``benchmarks/workloads/*.py`` (every module there is imported) and register
themselves with ``@workload(...)`` from ``benchmarks/harness.py``. The baseline of each selected
workload runs in the same invocation, so ratios never compare numbers from different runs.
Thread count is pinned before numpy/torch are imported (``--threads``, default 1: the per-core
numbers of the issues).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these workloads (plus their baselines)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats per workload")
    ap.add_argument("--out", metavar="FILE.json", help="also write the results as JSON")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for torch/BLAS (default 1)")
    ap.add_argument("--list", action="store_true", help="list the registered workloads and exit")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error(f"--threads: {args.threads} must be >= 1")
    return args


def load_workloads():
    """Import every module of benchmarks/workloads (each registers its workloads)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import harness
    import workloads

    for mod in sorted(m.name for m in pkgutil.iter_modules(workloads.__path__)):
        importlib.import_module(f"workloads.{mod}")
    return harness


def main(argv=None) -> int:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy / torch load their thread pools
    harness = load_workloads()
    reg = harness.REGISTRY
    if args.list:
        for name, w in reg.workloads.items():
            extra = f" (baseline: {w.baseline})" if w.baseline else " (baseline)"
            print(f"{name}{extra}: {w.description}")
        return 0
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    try:
        results = harness.run_all(reg, args.only, quick=args.quick, log=lambda m: print(m, file=sys.stderr, flush=True))
    except (KeyError, ValueError) as e:
        print(f"benchmarks/run.py: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    meta = harness.environment(args.threads) | {"quick": args.quick, "only": args.only}
    data = harness.to_json(results, meta)
    if args.out:  # first, so a closed stdout (| head) cannot lose the results
        harness.write_json(data, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    import json

    print(harness.format_table(results))
    print()
    print(json.dumps(data, indent=2, default=str))
    return 1 if any(r.status == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
