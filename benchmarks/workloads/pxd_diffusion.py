"""pxd-diffusion: sampling cost per 40-sensor event vs the number of DDIM steps, vs the paper generator.

One event = what ``b2bkg generate`` does per event with the ``small`` preset: the 40 starting
noises from the event's stream, ``steps`` U-Net evaluations of 40 count maps (16 x 48 cells) by the
deterministic DDIM sampler, and the count-map decoder to full-resolution 250 x 768 digits (cluster
placement, charges, zero suppression). Baseline: ``pxd-wgan-paper`` (``workloads.pxd``), so
``ratio`` = paper-generator time / this time.

Random weights: the network's cost does not depend on them, but the decoder's does (through the
number of fired pixels), so the decoder is fed a fixed count map with the Geant4 reference's
occupancy (Poisson cells, 1.49 % on layer 1 and 0.51 % on layer 2) and cluster spectra fitted on
synthetic 1-4 pixel clusters, instead of the untrained network's output.
"""

from __future__ import annotations

from harness import SkipWorkload, workload

from workloads.pxd import PXD_BASELINE

STEPS = (10, 25, 50)


def _setup(steps: int, seed: int = 0):
    try:
        import dataclasses

        import numpy as np
        import torch

        from b2bkg.core.seeding import event_rng
        from b2bkg.io.events import N_SENSORS, PxdDigits
        from b2bkg.pxd.models.diffusion import decode_count_maps, fit_decoder_stats, sample_images
        from b2bkg.training.registry import get_family
        from b2bkg.training.trainer import resolve_config
    except ImportError as e:
        raise SkipWorkload(f"cannot import pxd-diffusion ({e})") from None
    fam = get_family("pxd-diffusion")
    cfg = dataclasses.replace(resolve_config(fam, "small"), sampler="ddim", sampler_steps=steps)
    torch.manual_seed(seed)
    net = fam.build(cfg)["denoiser"].eval()
    rng = np.random.default_rng(seed)
    fr, fc = cfg.grid_factor
    occ = np.where(np.arange(N_SENSORS) < 16, 0.0149, 0.0051)[:, None, None]
    counts = rng.poisson(occ * fr * fc, (N_SENSORS, *cfg.grid)).astype(np.float64)  # (40, R, C) fired pixels per cell
    # decoder spectra from synthetic clusters of 1..4 pixels
    n = 4000
    u, v, size = rng.integers(0, 248, n), rng.integers(0, 766, n), rng.integers(1, 5, n)
    du, dv = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    keep = np.arange(4)[None, :] < size[:, None]
    s = np.repeat(rng.integers(0, N_SENSORS, n), 4)[keep.ravel()]
    ev = {"sensor": s, "ucell": (u[:, None] + du).ravel()[keep.ravel()], "vcell": (v[:, None] + dv).ravel()[keep.ravel()],
          "charge": rng.integers(7, 120, int(keep.sum()))}
    key = np.unique(((ev["sensor"] * 250 + ev["ucell"]) * 768 + ev["vcell"]), return_index=True)[1]
    stats = fit_decoder_stats(PxdDigits.from_events([{k: a[key] for k, a in ev.items()}]))
    events = np.arange(1)

    def run():
        with torch.inference_mode():
            sample_images(net, cfg, events, seed, torch.device("cpu"))  # (40, 1, 16, 48)
        d = decode_count_maps(counts, cfg.grid_factor, stats, event_rng(seed, "bench", 0), cfg.threshold_adu)
        if len(d["charge"]) == 0:
            raise RuntimeError("decoder produced no hits")
        return 1

    return run


def _register(steps: int):
    @workload(f"pxd-diffusion-ddim{steps}", baseline=PXD_BASELINE, unit="event", repeats=3, warmup=1, quick_repeats=1,
              quick_warmup=1, description=f"pxd-diffusion small, DDIM {steps} steps, 40 count maps + decoder to digits")
    def setup(quick: bool):
        return _setup(steps)

    return setup


for _s in STEPS:
    _register(_s)
