"""Selective-MC workloads: the skim-prediction network's cost per event on one CPU thread.

Each ``smc-nn-<arch>`` workload scores 512 generator-level mixed events (features from the
particles and the decay string + the forward pass, exactly what ``b2bkg filter`` does per event)
with the ``small`` preset's sizes; the cost does not depend on the weights, so they are random.
The baseline ``smc-generation`` is the event generator itself (decay chains + kinematics, the
0.11 HS06 s "generation" stage of seed 003), so the ratio tells how the network compares with the
cheapest stage it is added to. Issue 8's target: <= 1 ms per event on one thread.
"""

from __future__ import annotations

from harness import SkipWorkload, Target, workload

N_EVENTS = 512
SMC_BASELINE = "smc-generation"


def _events(n: int):
    from b2bkg.selmc.simulate import iter_smc_chunks

    return next(iter_smc_chunks(n, 7, sample="mixed", chunk_size=n, skim=False))


@workload(SMC_BASELINE, unit="event", units_per_call=N_EVENTS, repeats=3, quick_repeats=1,
          target=Target(reference="0.11 HS06 s/event (seed 003 generation stage)", source="issue 8"))
def smc_generation(quick: bool):
    """Generate 512 mixed events (no skim emulation)."""
    try:
        from b2bkg.selmc.simulate import iter_smc_chunks
    except ImportError as e:
        raise SkipWorkload(f"b2bkg.selmc is not available ({e})") from None
    n = 128 if quick else N_EVENTS
    _events(4)  # decay table cached

    def run():
        ev = next(iter_smc_chunks(n, 7, sample="mixed", chunk_size=n, skim=False))
        return ev.n_events

    return run


def _network(arch: str):
    def setup(quick: bool):
        try:
            import torch

            from b2bkg.selmc.models.family import SmcNn, SmcNnConfig, predict
        except ImportError as e:
            raise SkipWorkload(f"smc-nn is not available ({e})") from None
        from b2bkg.training.trainer import resolve_config

        fam = SmcNn()
        cfg = resolve_config(fam, "small", [f"arch={arch}"])
        torch.manual_seed(0)
        net = fam.build(cfg)["net"].eval()
        events = _events(128 if quick else N_EVENTS)
        if not isinstance(cfg, SmcNnConfig):
            raise SkipWorkload("unexpected config class")

        def run():
            predict(net, cfg, events)
            return events.n_events

        return run

    return setup


for _arch in ("seed", "conv", "resnet", "inception", "gnn", "transformer"):
    workload(f"smc-nn-{_arch}", baseline=SMC_BASELINE, unit="event", units_per_call=N_EVENTS, repeats=5, quick_repeats=2,
             target=Target(max_time_s=1e-3, reference="<= 1 ms/event, 1 thread", source="issue 8"),
             description=f"smc-nn small preset, arch={_arch}: features + forward for 512 mixed events")(_network(_arch))
