"""ONNX Runtime vs PyTorch for the same sampling network, per event on one thread (side by side).

* ``onnx-toy-torch`` / ``onnx-toy-ort``: the toy family's generator (trained in setup for a few
  steps, exported with :func:`b2bkg.campaign.onnx.export_onnx`), one call = its default batch of
  256 events, latents drawn per event as in ``generate`` (the draws are included in both).
* ``onnx-pxd-wgan-torch`` / ``onnx-pxd-wgan-ort``: the paper's WGAN-GP generator (Table 1,
  random weights; speed does not depend on them), one call = one sensor image (batch 1), network
  only (the 40-image event and digitisation are in ``workloads.pxd``).
``ratio`` of the ORT workload = PyTorch time / ORT time (> 1: ONNX Runtime faster).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
from harness import SkipWorkload, workload

_tmp: list[Path] = []


def _tmpdir() -> Path:
    if not _tmp:
        d = Path(tempfile.mkdtemp(prefix="b2bkg-bench-onnx-"))
        atexit.register(shutil.rmtree, d, True)
        _tmp.append(d)
    return _tmp[0]


def _imports():
    try:
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401

        from b2bkg.campaign import onnx  # noqa: F401
    except ImportError as e:
        raise SkipWorkload(f"onnx/onnxruntime not installed ({e})") from None


def _toy():
    """Trained toy run folder and its ONNX export (once per process)."""
    d = _tmpdir()
    if not (d / "toy.onnx").is_file():
        from b2bkg.campaign.onnx import export_onnx
        from b2bkg.core.progress import set_quiet
        from b2bkg.training import train
        from b2bkg.training.toy import make_toy_data

        set_quiet(True)
        make_toy_data(d / "toy.npy", 500, seed=1)
        train("toy-gan", d / "toy.npy", d / "toy-run", seed=0, overrides=["max_steps=10"])
        export_onnx(d / "toy-run", d / "toy.onnx", exporter="legacy")
    return d / "toy-run", d / "toy.onnx"


@workload("onnx-toy-torch", unit="event", repeats=5, quick_repeats=2, units_per_call=256)
def onnx_toy_torch(quick: bool):
    """toy-gan sampler in PyTorch: 256 events per call (per-event latents + generator)."""
    _imports()
    import torch

    from b2bkg.generate import load_run

    run_dir, _ = _toy()
    run = load_run(run_dir)
    events = np.arange(256)

    def go():
        with torch.inference_mode():
            run.family.sample(run.modules, run.cfg, events, 1, torch.device("cpu"))

    return go


@workload("onnx-toy-ort", baseline="onnx-toy-torch", unit="event", repeats=5, quick_repeats=2, units_per_call=256)
def onnx_toy_ort(quick: bool):
    """toy-gan sampler with ONNX Runtime (1 thread): same latents, same 256 events per call."""
    _imports()
    from b2bkg.campaign.onnx import OnnxSampler

    _, path = _toy()
    s = OnnxSampler(path, threads=1)
    events = np.arange(256)

    def go():
        s.sample(events, 1)

    return go


def _wgan():
    try:
        import torch

        from b2bkg.pxd.models.wgan import Generator, WganConfig
    except ImportError as e:
        raise SkipWorkload(f"cannot import the PXD WGAN ({e})") from None
    cfg = WganConfig.paper()
    torch.manual_seed(0)
    return Generator(cfg).eval(), cfg


@workload("onnx-pxd-wgan-torch", unit="image", repeats=3, quick_repeats=1)
def onnx_wgan_torch(quick: bool):
    """Paper WGAN-GP generator (20.4 M params) in PyTorch: one 256 x 768 sensor image per call."""
    _imports()
    import torch

    g, cfg = _wgan()
    z = torch.randn(1, cfg.latent_dim, generator=torch.Generator().manual_seed(1))

    def go():
        with torch.inference_mode():
            g(z)

    return go


@workload("onnx-pxd-wgan-ort", baseline="onnx-pxd-wgan-torch", unit="image", repeats=3, quick_repeats=1)
def onnx_wgan_ort(quick: bool):
    """The same generator exported to ONNX, ONNX Runtime on 1 thread: one image per call (checked vs torch)."""
    _imports()
    import torch

    from b2bkg.campaign.onnx import ExportSpec, OnnxSampler, _export

    g, cfg = _wgan()
    path = _tmpdir() / "wgan.onnx"
    _export(ExportSpec(g, (torch.zeros(1, cfg.latent_dim),), ["z"], ["x"]), path, "legacy", 17)
    s = OnnxSampler(path, threads=1)
    z = torch.randn(1, cfg.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = g(z).numpy()
    got = s.run(z=z.numpy())["x"]
    if not np.allclose(got, ref, atol=1e-4):
        raise RuntimeError(f"ONNX differs from PyTorch: max |diff| {np.abs(got - ref).max():.3g}")

    def go():
        s.run(z=z.numpy())

    return go
