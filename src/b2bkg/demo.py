"""The main job end to end on the embedded default (``b2bkg demo`` / ``make demo``).

Simulate truth for the three pillars, train the small models that matter most (the fast PXD
generator and the PXD null baseline, the ECL GAN with its two baselines, the skim network),
generate, evaluate against held-out truth (with a second truth sample for the floor), run the
physics validation, and write ``report.html``. Each step is a small function over
:class:`DemoContext` that prints what it did and how long it took. Sample sizes and training
lengths are chosen so the demo fits in ~10 minutes on 2 CPU cores; the README's tables use larger
samples (``b2bkg reproduce``). A step whose model family is not available in this installation is
reported as skipped, never faked.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

__all__ = ["DemoContext", "run_demo", "run_reproduce", "STEPS", "DemoSizes", "REPRODUCE"]


@dataclass(frozen=True)
class DemoSizes:
    """Event counts, models and training overrides of one end-to-end run.

    The defaults are the demo's (small enough for 2 CPU cores in ~10 minutes); :data:`REPRODUCE`
    holds the README's sample sizes and every model.
    """

    pxd_train: int = 200
    pxd_test: int = 100
    ecl_train: int = 120
    ecl_test: int = 60
    smc_train: int = 20000
    smc_test: int = 6000
    #: validation events for the skim network (0: none, the last weights are used)
    smc_val: int = 0
    #: skim networks trained with seeds seed, seed+1, ... and merged into one ensemble (logits averaged)
    smc_members: int = 1
    validate_events: int = 60
    #: conditioning check (issue 6): training events over wide conditions, and events per held-out
    #: condition set (0: the step is skipped, as in the demo)
    pxd_cond_train: int = 0
    pxd_cond_test: int = 0
    pxd_models: tuple[str, ...] = ("pxd-null", "pxd-fast")
    ecl_models: tuple[str, ...] = ("ecl-cov", "ecl-ae", "ecl-gan")
    overrides: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def overrides_for(self, model: str) -> list[str]:
        return [o for m, ov in self.overrides if m == model for o in ov]


#: README sample sizes: every table in the README is produced by ``b2bkg reproduce`` with these.
REPRODUCE = DemoSizes(
    pxd_train=1000, pxd_test=2000, pxd_cond_train=2000, pxd_cond_test=800, ecl_train=1000, ecl_test=2000,
    smc_train=200000, smc_test=60000, smc_val=5000, smc_members=2, validate_events=100,
    pxd_models=("pxd-null", "pxd-fast", "pxd-wgan", "pxd-event-gan", "pxd-iea-gan", "pxd-diffusion"),
    overrides=(
        ("smc-nn", ("arch=gnn", "max_steps=10000", "lr_decay_start=0.3", "val_every=500", "val_events=5000", "checkpoint_every=500",
                    "ema_decay=0.999", "ema_modules=[net]")),
        ("ecl-gan", ("max_train_events=1000",)), ("ecl-cov", ("max_train_events=1000",)), ("ecl-ae", ("max_train_events=1000",)),
        # the image GANs' README rows: 300 training events
        ("pxd-wgan", ("max_train_events=300",)), ("pxd-event-gan", ("max_train_events=300",)),
        ("pxd-iea-gan", ("max_train_events=300",)),
    ),
)


@dataclass
class DemoContext:
    out: Path
    seed: int
    sizes: DemoSizes = DemoSizes()
    timings: dict = field(default_factory=dict)
    report_inputs: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)

    def path(self, *parts) -> Path:
        p = self.out.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def data(self, name: str) -> Path:
        return self.path("data", name)


def _family_available(name: str) -> bool:
    from b2bkg.training.registry import known_families

    return name in known_families()


def _train_generate_evaluate(ctx: DemoContext, model: str, pillar: str, n_events: int) -> None:
    from b2bkg.evaluate import evaluate_files
    from b2bkg.generate import generate
    from b2bkg.training import train

    if not _family_available(model):
        ctx.skipped[model] = "model family not available"
        click.echo(f"   {model}: skipped (family not available)")
        return
    run = ctx.path("runs", model)
    train(model, ctx.data(f"{pillar}_train.h5"), run, config="small", overrides=ctx.sizes.overrides_for(model), val=ctx.data(f"{pillar}_test.h5"),
          seed=ctx.seed, command="b2bkg demo")
    gen = ctx.data(f"{model}_generated.h5")
    generate(run, n_events, ctx.seed + 7, gen, command="b2bkg demo")
    out = ctx.path("eval", model)
    m = evaluate_files(ctx.data(f"{pillar}_test.h5"), gen, out, truth2=ctx.data(f"{pillar}_test2.h5"), seed=ctx.seed)
    ctx.report_inputs += [out, run]
    if "summary_text" in m:
        click.echo(m["summary_text"])


# -- PXD ---------------------------------------------------------------------------------------
def step_pxd_truth(ctx: DemoContext) -> None:
    """PXD truth: a training sample and two held-out samples (the second gives the floor)."""
    from b2bkg.pxd.simulate import simulate_pxd

    s = ctx.sizes
    simulate_pxd(s.pxd_train, ctx.seed, ctx.data("pxd_train.h5"), command="b2bkg demo")
    simulate_pxd(s.pxd_test, ctx.seed + 1000, ctx.data("pxd_test.h5"), command="b2bkg demo")
    simulate_pxd(s.pxd_test, ctx.seed + 2000, ctx.data("pxd_test2.h5"), command="b2bkg demo")


def step_pxd_calibration(ctx: DemoContext) -> None:
    """PXD truth (the held-out sample) vs the published Geant4 reference."""
    from b2bkg.io import read_pxd
    from b2bkg.pxd.calibrate import compare, format_table, summarize

    summ = summarize(read_pxd(ctx.data("pxd_test.h5")))
    rows = compare(summ)
    scalars = {k: v for k, v in summ.items() if not hasattr(v, "shape")}
    res = {"rows": rows, "summary": scalars, "all_pass": all(r["pass"] for r in rows), "n_events": ctx.sizes.pxd_test,
           "seed": ctx.seed + 1000, "events_per_s": float("nan")}
    out = ctx.path("eval", "pxd_calibration")
    out.mkdir(parents=True, exist_ok=True)
    text = format_table(res)
    (out / "calibration.txt").write_text(text + "\n")
    (out / "metrics.json").write_text(json.dumps({"pillar": "pxd", "title": "PXD truth vs Geant4 reference",
                                                  "calibration": {
                                                      "simulator": {r["label"]: r["sim"] for r in rows},
                                                      "geant4_reference": {r["label"]: r["ref"] for r in rows},
                                                      "tolerance": {r["label"]: r["tolerance"] for r in rows},
                                                      "verdict": {r["label"]: "PASS" if r["pass"] else "FAIL" for r in rows}}},
                                                 indent=1, default=float))
    ctx.report_inputs.append(out)
    click.echo(text)


def step_pxd_models(ctx: DemoContext) -> None:
    """Train pxd-null and pxd-fast (small), generate, evaluate against held-out truth."""
    for model in ctx.sizes.pxd_models:
        _train_generate_evaluate(ctx, model, "pxd", ctx.sizes.pxd_test)


#: training spreads of the conditioning check (log-normal sigmas: lumi ~0.3-3x, currents ~0.6-1.6x)
COND_WIDE = {"lumi_spread": 0.4, "current_spread": 0.25, "vacuum_spread": 0.15}
#: its held-out condition sets (scales; the nominal event-to-event spreads)
COND_HELD_OUT = {
    "lumi 0.6x": {"lumi_scale": 0.6},
    "lumi 1.7x": {"lumi_scale": 1.7},
    "HER + LER currents 1.3x": {"her_current_scale": 1.3, "ler_current_scale": 1.3},
    "nominal": {},
}


def step_pxd_conditioning(ctx: DemoContext) -> None:
    """pxd-fast trained over wide beam conditions, judged per sensor at held-out conditions."""
    from b2bkg.core.conditions import ConditionsConfig
    from b2bkg.generate import generate
    from b2bkg.io import read_pxd
    from b2bkg.pxd.conditioning import conditioning_check, format_conditioning, plot_conditioning
    from b2bkg.pxd.simulate import simulate_pxd
    from b2bkg.training import train

    s = ctx.sizes
    if s.pxd_cond_train <= 0 or s.pxd_cond_test <= 0:
        ctx.skipped["pxd-conditioning"] = "not in this run's sizes"
        click.echo("   skipped (b2bkg reproduce runs it)")
        return
    wide = ctx.data("pxd_cond_train.h5")
    simulate_pxd(s.pxd_cond_train, ctx.seed + 500, wide, conditions=ConditionsConfig(**COND_WIDE), command="b2bkg reproduce")
    run = ctx.path("runs", "pxd-fast-conditions")
    train("pxd-fast", wide, run, config="small", seed=ctx.seed, command="b2bkg reproduce")
    samples = {}
    for i, (label, scales) in enumerate(COND_HELD_OUT.items()):
        truth, gen = ctx.data(f"pxd_cond_test{i}.h5"), ctx.data(f"pxd_cond_gen{i}.h5")
        simulate_pxd(s.pxd_cond_test, ctx.seed + 600 + i, truth, conditions=ConditionsConfig(**scales), command="b2bkg reproduce")
        generate(run, s.pxd_cond_test, ctx.seed + 7, gen, conditions=truth, command="b2bkg reproduce")
        samples[label] = (read_pxd(truth), read_pxd(gen))
    rows = conditioning_check(samples)
    out = ctx.path("eval", "pxd_conditioning")
    out.mkdir(parents=True, exist_ok=True)
    plot_conditioning(rows, out / "conditioning.png")
    keys = ("occupancy_bias_pct", "sensor_mean_abs_err_pct", "sensor_max_abs_err_pct", "worst_sensor", "worst_pull", "sensor_stat_err_pct")
    (out / "metrics.json").write_text(json.dumps({
        "pillar": "pxd", "title": "pxd-fast at held-out beam conditions (per-sensor occupancy)",
        "conditioning": {r["label"]: {k: r[k] for k in keys} for r in rows}, "plots": ["conditioning.png"]}, indent=1))
    ctx.report_inputs.append(out)
    click.echo(format_conditioning(rows))


def step_validation(ctx: DemoContext) -> None:
    """Pulls, vertices, ECL clusters with no / true / generated (pxd-fast, ecl-gan) background."""
    from b2bkg.validation.run import validate

    pxd_run, ecl_run = ctx.path("runs", "pxd-fast"), ctx.path("runs", "ecl-gan")
    res = validate(ctx.path("validation"), events=ctx.sizes.validate_events, seed=ctx.seed,
                   pxd_model=pxd_run if (pxd_run / "config.yaml").exists() else None,
                   ecl_model=ecl_run if (ecl_run / "config.yaml").exists() else None, command="b2bkg demo")
    ctx.report_inputs.append(ctx.path("validation"))
    checks = res.get("checks", {})
    click.echo(f"   validation checks: {json.dumps(checks, default=str)[:300]}")


# -- ECL ---------------------------------------------------------------------------------------
def step_ecl_truth(ctx: DemoContext) -> None:
    from b2bkg.ecl.simulate import simulate_ecl

    s = ctx.sizes
    simulate_ecl(s.ecl_train, ctx.seed, ctx.data("ecl_train.h5"), command="b2bkg demo")
    simulate_ecl(s.ecl_test, ctx.seed + 1000, ctx.data("ecl_test.h5"), command="b2bkg demo")
    simulate_ecl(s.ecl_test, ctx.seed + 2000, ctx.data("ecl_test2.h5"), command="b2bkg demo")


def step_ecl_models(ctx: DemoContext) -> None:
    """Train ecl-cov, ecl-ae and ecl-gan (small), generate, evaluate (KS2 vs floor)."""
    for model in ctx.sizes.ecl_models:
        _train_generate_evaluate(ctx, model, "ecl", ctx.sizes.ecl_test)


# -- Selective MC -----------------------------------------------------------------------------
def step_smc(ctx: DemoContext) -> None:
    """Generator-level events with skim labels, the skim network, unbiased filtering, speed-up."""
    from b2bkg.selmc.simulate import simulate_smc

    s = ctx.sizes
    simulate_smc(s.smc_train, ctx.seed, ctx.data("smc_train.h5"), sample="mixed", command="b2bkg demo")
    simulate_smc(s.smc_test, ctx.seed + 1000, ctx.data("smc_test.h5"), sample="mixed", oracle_repeats=8, command="b2bkg demo")
    simulate_smc(s.smc_test, ctx.seed + 2000, ctx.data("smc_ref.h5"), sample="mixed", command="b2bkg demo")
    if not _family_available("smc-nn"):
        ctx.skipped["smc-nn"] = "model family not available"
        click.echo("   smc-nn: skipped (family not available)")
        return
    from b2bkg.selmc.speedup import selmc_study
    from b2bkg.training import train

    val = None
    if s.smc_val > 0:
        val = ctx.data("smc_val.h5")
        simulate_smc(s.smc_val, ctx.seed + 3000, val, sample="mixed", command="b2bkg demo")
    run = ctx.path("runs", "smc-nn")
    members = [run] if s.smc_members <= 1 else [ctx.path("runs", f"smc-nn-member{k}") for k in range(s.smc_members)]
    for k, r in enumerate(members):
        train("smc-nn", ctx.data("smc_train.h5"), r, config="small", overrides=ctx.sizes.overrides_for("smc-nn"), val=val,
              seed=ctx.seed + k, command="b2bkg demo")
    if len(members) > 1:
        from b2bkg.selmc.models.family import merge_runs

        merge_runs(members, run, command="b2bkg demo")
    out = ctx.path("eval", "smc-nn")
    m = selmc_study(run, ctx.data("smc_test.h5"), ctx.data("smc_ref.h5"), out, seed=ctx.seed)
    ctx.report_inputs += [out, run]
    click.echo(f"   smc-nn: AUC {m.get('auc', float('nan')):.3f}" if isinstance(m.get("auc"), float) else "   smc-nn: study written")


def step_report(ctx: DemoContext) -> None:
    from b2bkg.report.html import build_report

    p = build_report([x for x in ctx.report_inputs if Path(x).exists()], ctx.path("report.html"), title="b2bkg demo")
    click.echo(f"   report: {p}")


STEPS = [
    ("PXD truth simulation", step_pxd_truth),
    ("PXD calibration vs Geant4 reference", step_pxd_calibration),
    ("PXD models: null and fast generator", step_pxd_models),
    ("PXD conditioning: held-out beam conditions", step_pxd_conditioning),
    ("ECL truth simulation", step_ecl_truth),
    ("ECL models: covariance, autoencoder, GAN", step_ecl_models),
    ("Physics validation: tracks, vertices, ECL clusters, ROI", step_validation),
    ("Selective MC: events, skim network, filter", step_smc),
    ("HTML report", step_report),
]


def run_demo(out, seed: int = 1, *, steps=None, sizes: DemoSizes | None = None) -> DemoContext:
    """Run the demo steps into ``out``; returns the context with timings."""
    ctx = DemoContext(Path(out), seed, sizes or DemoSizes())
    ctx.out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    for name, fn in steps or STEPS:
        click.echo(f"== {name}")
        t0 = time.perf_counter()
        fn(ctx)
        ctx.timings[name] = round(time.perf_counter() - t0, 2)
        click.echo(f"   done in {ctx.timings[name]:.1f} s")
    ctx.timings["total"] = round(time.perf_counter() - t_all, 2)
    (ctx.out / "timings.json").write_text(json.dumps({"timings_s": ctx.timings, "skipped": ctx.skipped}, indent=2))
    click.echo(f"demo finished in {ctx.timings['total']:.0f} s: {ctx.out / 'report.html'}")
    return ctx


def run_reproduce(out, seed: int = 1) -> DemoContext:
    """Every README table at its stated sample size (see :data:`REPRODUCE`); long on 2 CPU cores."""
    return run_demo(out, seed, sizes=REPRODUCE)
