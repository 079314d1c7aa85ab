"""ECL model fidelity side by side at large n (issue 7): KS2 per model vs the truth-vs-truth floor,
event-level coherence and generation time per event on one thread.

Not a timed harness workload (it registers none); a script that uses the library functions behind
``b2bkg evaluate``: :func:`b2bkg.ecl.metrics.ks2_per_crystal` on a stratified crystal subset
(``--crystals``) with ``--n`` waveforms per crystal (one per event; the seed's selected
waveforms of each truth sample left out), the floor from a second, independent truth sample at
the same ``n``, and :func:`b2bkg.ecl.metrics.event_level_checks` on the first ``--event-level``
full events. Generated events come from each run's own sampler (as ``b2bkg generate``, fully
generated, no ``--keep-from``), events ``0 .. n-1`` of ``--seed``.

Example:
    $ python benchmarks/workloads/ecl_fidelity.py --truth A.h5 --truth2 B.h5 \\
        --model gan=runs/ecl-gan --model cov=runs/ecl-cov --model ae=runs/ecl-ae --n 2000 --out fid.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _subset(n_crystals: int):
    import numpy as np

    from b2bkg.core.seeding import stream_rng

    rng = stream_rng(0, "ecl.fidelity")
    edges = np.linspace(0, 8736, n_crystals + 1).astype(np.int64)
    return edges[:-1] + (rng.random(n_crystals) * np.diff(edges)).astype(np.int64)


def _read_truth(path, n, crystals, n_full, chunk=100):
    """(C, n, 31) float64 with selected waveforms NaN, first ``n_full`` full events + their mask."""
    import numpy as np

    from b2bkg.ecl.select import select_waveforms
    from b2bkg.io import open_file

    sub = np.empty((len(crystals), n, 31))
    full, masks = [], []
    with open_file(path) as f:
        if f.n_events < n:
            raise SystemExit(f"{path}: {f.n_events} events < --n {n}")
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            w = f.read_ecl(s, e).waveforms
            m = select_waveforms(w)
            x = w[:, crystals].astype(np.float64)
            x[m[:, crystals]] = np.nan
            sub[:, s:e] = x.transpose(1, 0, 2)
            if s < n_full:
                full.append(w[: n_full - s])
                masks.append(m[: n_full - s])
    return sub, np.concatenate(full), np.concatenate(masks)


def _generate(run, n, crystals, n_full, seed, chunk=50):
    import numpy as np
    import torch

    from b2bkg.ecl.models.data import to_adc
    from b2bkg.generate import load_run

    r = load_run(run)
    sub = np.empty((len(crystals), n, 31))
    full = []
    with torch.inference_mode():
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            w = to_adc(r.family.sample_events(r.modules, r.cfg, np.arange(s, e, dtype=np.int64), seed, "cpu"))
            sub[:, s:e] = w[:, crystals].astype(np.float64).transpose(1, 0, 2)
            if s < n_full:
                full.append(w[: n_full - s])
    return r, sub, np.concatenate(full)


def _time_per_event(r, repeats=15, warmup=2):
    import numpy as np
    import torch

    from b2bkg.ecl.models.data import to_adc

    ts = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            to_adc(r.family.sample_events(r.modules, r.cfg, np.array([10_000 + i]), 1, "cpu"))
            ts.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(ts[warmup:]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--truth", required=True)
    ap.add_argument("--truth2", required=True)
    ap.add_argument("--model", action="append", default=[], help="NAME=RUN_DIR (repeatable)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--crystals", type=int, default=256)
    ap.add_argument("--event-level", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from b2bkg.ecl.metrics import METRIC_NAMES, event_level_checks, ks2_per_crystal

    torch.set_num_threads(1)
    crystals = _subset(args.crystals)
    a, fa, ma = _read_truth(args.truth, args.n, crystals, args.event_level)
    b, fb, mb = _read_truth(args.truth2, args.n, crystals, args.event_level)

    def summary(ks):
        return {k: float(np.nanmean(v)) for k, v in ks.items()}

    floor = summary(ks2_per_crystal(a, b))
    ev_truth = event_level_checks(fa, fb, truth_mask=ma, generated_mask=mb)
    res = {"n_waveforms_per_crystal": args.n, "n_crystals": int(len(crystals)), "event_level_events": args.event_level,
           "floor": floor, "event_level_truth_vs_truth2": ev_truth, "models": {}}
    print(f"floor   mean KS2 {floor['mean']:.4f}  " + "  ".join(f"{k} {floor[k]:.4f}" for k in METRIC_NAMES), flush=True)
    for spec in args.model:
        name, run = spec.split("=", 1)
        r, g, fg = _generate(run, args.n, crystals, args.event_level, args.seed)
        ks = summary(ks2_per_crystal(a, g))
        ev = event_level_checks(fa, fg, truth_mask=ma)
        ms = _time_per_event(r)
        res["models"][name] = {"run": run, "ks2": ks, "gap_to_floor": ks["mean"] - floor["mean"], "event_level": ev, "ms_per_event_1thread": ms}
        print(f"{name:7s} mean KS2 {ks['mean']:.4f} (gap {ks['mean'] - floor['mean']:+.4f})  "
              + "  ".join(f"{k} {ks[k]:.4f}" for k in METRIC_NAMES)
              + f"  coherence {ev['generated']['coherence']:.2f} (truth {ev['truth']['coherence']:.2f})"
              + f"  pair_corr {ev['generated']['pair_corr']:.4f} (truth {ev['truth']['pair_corr']:.4f})"
              + f"  summed-power rel sd {ev['generated']['summed_power_rel_sd']:.4f} (truth {ev['truth']['summed_power_rel_sd']:.4f})"
              + f"  {ms:.1f} ms/event", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
