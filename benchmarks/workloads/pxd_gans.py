"""PXD image GAN families: generation time and peak memory per 40-sensor event, vs the paper generator.

Each workload builds a family (``pxd-wgan``, ``pxd-event-gan``, ``pxd-iea-gan``) from its shipped
preset with random weights and times ``Family.sample`` for one event: latents and noise from the
per-event streams, the networks, the inverse transform with the 7-ADU threshold, and sparse digits,
i.e. what ``b2bkg generate`` does per event. Baseline: ``pxd-wgan-paper`` (``workloads.pxd``), so
``ratio`` = paper-generator time / this time.

As there, random weights would fire almost every pixel and make the digit conversion
unrepresentatively slow, so the output convolution is rescaled (weights and bias only, same cost)
so that ~1 % of the pixels of the timed event pass the threshold, the Geant4 reference occupancy.
"""

from __future__ import annotations

from harness import SkipWorkload, workload

from workloads.pxd import PXD_BASELINE, TARGET_OCCUPANCY


def _output_conv(name: str, gen):
    return gen.out if name == "pxd-wgan" else gen.trunk.out


def _family_event(name: str, preset: str, seed: int = 0):
    """Setup: family ``name`` with preset ``preset``, random weights, occupancy calibrated; run() -> 1 event."""
    try:
        import math

        import numpy as np
        import torch

        from b2bkg.training.registry import get_family
        from b2bkg.training.trainer import resolve_config
    except ImportError as e:
        raise SkipWorkload(f"cannot import the training registry ({e})") from None
    fam = get_family(name)
    cfg = resolve_config(fam, preset)
    torch.manual_seed(seed)
    modules = {k: m.eval() for k, m in fam.build(cfg).items()}
    conv = _output_conv(name, modules["generator"])
    captured = []
    hook = conv.register_forward_hook(lambda mod, inp, out: captured.append(out.detach()))
    with torch.inference_mode():
        fam.sample(modules, cfg, np.arange(1), seed, torch.device("cpu"))
    hook.remove()
    y = torch.cat([c.flatten() for c in captured])
    s = float(y.std()) or 1.0
    # the empirical (1 - occupancy) quantile of the pre-tanh output is moved onto the threshold
    # (a smooth, non-Gaussian field from few images would miss a Gaussian calibration)
    q = float(torch.quantile(y[:: max(1, len(y) // 4_000_000)], 1 - TARGET_OCCUPANCY))
    x_thr = 2 * math.log(cfg.threshold_adu + 0.5) / math.log(256) - 1
    a = 0.3 / s
    with torch.no_grad():
        conv.weight.mul_(a)
        conv.bias.sub_(q).mul_(a).add_(math.atanh(x_thr))
    events = np.arange(1)

    def run():
        with torch.inference_mode():
            d = fam.sample(modules, cfg, events, seed, torch.device("cpu"))["pxd"]
        if d.n_events != 1 or d.n_hits == 0:
            raise RuntimeError(f"{name}: sampler returned {d.n_events} events with {d.n_hits} hits")
        return 1

    return run


def _register(name: str, preset: str, repeats: int):
    @workload(f"{name}-{preset}-family", baseline=PXD_BASELINE, unit="event", repeats=repeats, quick_repeats=1,
              description=f"{name} ({preset} preset, random weights): Family.sample of one 40-sensor event")
    def setup(quick: bool):
        return _family_event(name, preset)

    return setup


for _name in ("pxd-wgan", "pxd-event-gan", "pxd-iea-gan"):
    _register(_name, "small", repeats=5)
    _register(_name, "paper", repeats=2)
