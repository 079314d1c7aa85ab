"""The main job end to end on the embedded default (``b2bkg demo`` / ``make demo``).

Each step is a small function over :class:`DemoContext`; the steps run in order, print what they
did and how long it took, and write everything under one folder, ending with ``report.html``.
Sample sizes are chosen so the whole demo fits in ~10 minutes on 2 CPU cores; the README's tables
use larger samples (``b2bkg reproduce``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

__all__ = ["DemoContext", "run_demo", "STEPS"]


@dataclass
class DemoContext:
    out: Path
    seed: int
    n_pxd_train: int = 300
    n_pxd_test: int = 200
    timings: dict = field(default_factory=dict)
    report_inputs: list = field(default_factory=list)

    def path(self, *parts) -> Path:
        p = self.out.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


def step_pxd_truth(ctx: DemoContext) -> None:
    """Simulate PXD truth: a training sample and two held-out samples (the second gives the floor)."""
    from b2bkg.pxd.simulate import simulate_pxd

    simulate_pxd(ctx.n_pxd_train, ctx.seed, ctx.path("data", "pxd_train.h5"), command="b2bkg demo")
    simulate_pxd(ctx.n_pxd_test, ctx.seed + 1000, ctx.path("data", "pxd_test.h5"), command="b2bkg demo")
    simulate_pxd(ctx.n_pxd_test, ctx.seed + 2000, ctx.path("data", "pxd_test2.h5"), command="b2bkg demo")


def step_pxd_calibration(ctx: DemoContext) -> None:
    """PXD truth vs the published Geant4 reference."""
    from b2bkg.pxd.calibrate import calibrate_file, format_calibration

    res = calibrate_file(ctx.path("data", "pxd_test.h5"))
    ctx.path("pxd_calibration.json").write_text(json.dumps(res, indent=2, default=float))
    click.echo(format_calibration(res))


def step_pxd_truth_eval(ctx: DemoContext) -> None:
    """Truth vs truth (the floor every PXD distance is read against) and a distorted sample."""
    from b2bkg.evaluate import evaluate_files

    out = ctx.path("eval", "pxd_truth_vs_truth")
    evaluate_files(ctx.path("data", "pxd_test.h5"), ctx.path("data", "pxd_test2.h5"), out, seed=ctx.seed)
    ctx.report_inputs.append(out)


def step_report(ctx: DemoContext) -> None:
    from b2bkg.report.html import build_report

    p = build_report(ctx.report_inputs, ctx.path("report.html"), title="b2bkg demo")
    click.echo(f"report: {p}")


STEPS = [
    ("PXD truth simulation", step_pxd_truth),
    ("PXD calibration vs Geant4 reference", step_pxd_calibration),
    ("PXD truth-vs-truth evaluation", step_pxd_truth_eval),
    ("HTML report", step_report),
]


def run_demo(out, seed: int = 1, *, steps=None) -> DemoContext:
    """Run the demo steps into ``out``; returns the context with timings."""
    ctx = DemoContext(Path(out), seed)
    ctx.out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    for name, fn in steps or STEPS:
        click.echo(f"== {name}")
        t0 = time.perf_counter()
        fn(ctx)
        ctx.timings[name] = round(time.perf_counter() - t0, 2)
        click.echo(f"   done in {ctx.timings[name]:.1f} s")
    ctx.timings["total"] = round(time.perf_counter() - t_all, 2)
    ctx.path("timings.json").write_text(json.dumps(ctx.timings, indent=2))
    click.echo(f"demo finished in {ctx.timings['total']:.0f} s: {ctx.out}/report.html")
    return ctx
