"""Per-family ONNX export wrappers (without touching the family files), and the onnxruntime
paths that reproduce each family's ``sample`` / ``predict`` from an exported graph.

:data:`EXPORT_HOOKS` maps a family name to ``hook(modules, cfg) -> ExportSpec``;
:func:`b2bkg.campaign.onnx.export_spec` consults it before a family's own ``export_module``
and the default. What each graph takes and gives (B = events, dynamic):

============== ===================================================== ======================================
family          inputs                                                output
============== ===================================================== ======================================
ecl-gan         ``z`` (B, 8736, latent_dim), ``e`` (B, 1, ev_dim)      ``waveforms`` (B, 8736, 31) float ADC
ecl-cov         ``z`` (B, 8736, 31)                                    ``waveforms`` (B, 8736, 31) float ADC
ecl-ae          ``u`` (B, 8736, latent_dim), ``eps`` (B, 8736, 31)     ``waveforms`` (B, 8736, 31) float ADC
pxd-wgan        ``z`` (B, 40, latent_dim)                              ``images`` (B, 40, 1, 256, 768) in [-1, 1]
pxd-event-gan   ``eps`` (B, latent + noise maps, flat)                 ``images`` (B, 40, fr*fc, R, C) in [-1, 1]
pxd-iea-gan     ``eps`` (B, 40*latent + noise maps, flat)              ``images`` (B, 40, fr*fc, R, C) in [-1, 1]
pxd-diffusion   ``x`` (N, 1, H, W), ``t`` (N,) int64, ``sensor`` (N,)  ``pred`` (N, 1, H, W): ONE denoiser step
                int64, ``cond`` (N, 6), ``cond_mask`` (N,) float
smc-nn          ``pdg``, ``mother_pdg``, ``mother`` (B, L) int64,      ``prob`` (B, S) pass probability
                ``x`` (B, L, F), ``mask`` (B, L) bool, ``tokens``
                (B, T) int64 (L, T dynamic)
============== ===================================================== ======================================

Reproducing ``generate`` exactly: every latent input is drawn per event from
``torch_generator(seed, "generate", i)`` in the family's order (``ExportSpec.draws``, recorded in
the file), so :meth:`OnnxSampler.sample` feeds the same numbers as PyTorch; the final conversion
(``to_adc`` for ECL, ``images_to_digits`` for the PXD GANs) stays outside the graph:
:func:`onnx_generate` does it. For ``pxd-diffusion`` the sampler loop (DDIM/DDPM) runs in Python
with the ONNX denoiser (:func:`diffusion_images_onnx`); its count-map decoding is the family's numpy
code. ``smc-nn`` features are built in numpy as :func:`b2bkg.selmc.models.family.predict` does
(:func:`smc_predict_onnx`). ``pxd-fast`` and ``pxd-null`` are numpy table samplers: no network.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from b2bkg.core.errors import ModelError

__all__ = ["EXPORT_HOOKS", "onnx_generate", "diffusion_images_onnx", "smc_predict_onnx"]

N_CRYSTALS, N_SAMPLES, N_SENSORS = 8736, 31, 40


def _spec(*args, **kw):
    from b2bkg.campaign.onnx import ExportSpec

    return ExportSpec(*args, **kw)


# ------------------------------------------------------------------------------------------ ECL
class _EclGan(nn.Module):
    """(z (B, 8736, dz)[, e (B, 1, de)]) -> float ADC waveforms (B, 8736, 31), as ``EclGan.sample_events``."""

    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, z, e=None):
        g = self.g
        return g.norm.denormalize(g(z, e, g.norm.ring[None, :], all_crystals=True))


def _ecl_gan(modules, cfg):
    g, dz, de = modules["generator"], cfg.latent_dim, cfg.event_latent_dim
    ex = (torch.zeros(1, N_CRYSTALS, dz),) + ((torch.zeros(1, 1, de),) if de else ())
    names = ["z"] + (["e"] if de else [])
    # sample_events: per event stream, e first (at least one number drawn), then z
    draws = [("e" if de else None, (1, max(de, 1))), ("z", (N_CRYSTALS, dz))]
    return _spec(_EclGan(g), ex, names, ["waveforms"], {"z": (N_CRYSTALS, dz), **({"e": (1, de)} if de else {})},
                 draws=draws, meta={"postprocess": "ecl_adc"})


def _ecl_cov(modules, cfg):
    return _spec(modules["sampler"], (torch.zeros(1, N_CRYSTALS, N_SAMPLES),), ["z"], ["waveforms"],
                 {"z": (N_CRYSTALS, N_SAMPLES)}, draws=[("z", (N_CRYSTALS, N_SAMPLES))], meta={"postprocess": "ecl_adc"})


class _EclAe(nn.Module):
    """(u (B, 8736, dz), eps (B, 8736, 31)) -> float ADC waveforms, as ``EclAe.sample_events``."""

    def __init__(self, dec):
        super().__init__()
        self.dec = dec

    def forward(self, u, eps):
        dec = self.dec
        ring = dec.norm.ring[None, :].expand(u.shape[0], -1)
        return dec.norm.denormalize(dec(u, ring) + dec.log_sd[ring].exp() * eps)


def _ecl_ae(modules, cfg):
    dz = cfg.latent_dim
    shapes = {"u": (N_CRYSTALS, dz), "eps": (N_CRYSTALS, N_SAMPLES)}
    return _spec(_EclAe(modules["decoder"]), (torch.zeros(1, *shapes["u"]), torch.zeros(1, *shapes["eps"])),
                 ["u", "eps"], ["waveforms"], shapes, draws=list(shapes.items()), meta={"postprocess": "ecl_adc"})


# ------------------------------------------------------------------------------------------ PXD
class _PerSensor(nn.Module):
    """z (B, 40, dz) -> images (B, 40, 1, 256, 768): the WGAN generator on each of the 40 latents."""

    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, z):
        x = self.g(z.reshape(-1, z.shape[-1]))
        return x.reshape(z.shape[0], N_SENSORS, *x.shape[1:])


def _pxd_wgan(modules, cfg):
    shape = (N_SENSORS, cfg.latent_dim)
    return _spec(_PerSensor(modules["generator"]), (torch.zeros(1, *shape),), ["z"], ["images"], {"z": shape},
                 draws=[("z", shape)], meta={"postprocess": "pxd_images", "grid_factor": list(cfg.grid_factor),
                                             "threshold_adu": cfg.threshold_adu})


class _FlatLatent(nn.Module):
    """eps (B, total) -> the family generator on (latent, noise maps) split as ``split_noise`` does."""

    def __init__(self, g, shapes):
        super().__init__()
        self.g, self.shapes = g, [tuple(s) for s in shapes]
        self.sizes = [int(np.prod(s)) for s in self.shapes]

    def forward(self, eps):
        parts = [p.reshape(eps.shape[0], *s) for p, s in zip(torch.split(eps, self.sizes, dim=1), self.shapes)]
        return self.g(parts[0], parts[1:])


def _pxd_flat(latent_shape):
    def hook(modules, cfg):
        g = modules["generator"]
        shapes = [latent_shape(cfg)] + list(g.noise_shapes())
        total = sum(int(np.prod(s)) for s in shapes)
        return _spec(_FlatLatent(g, shapes), (torch.zeros(1, total),), ["eps"], ["images"], {"eps": (total,)},
                     draws=[("eps", (total,))], meta={"postprocess": "pxd_images", "grid_factor": list(cfg.grid_factor),
                                                      "threshold_adu": cfg.threshold_adu})
    return hook


class _Denoiser(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t, sensor, cond, cond_mask):
        return self.net(x, t, sensor, cond, cond_mask)


def _pxd_diffusion(modules, cfg):
    H, W = cfg.grid
    ex = (torch.zeros(1, 1, H, W), torch.full((1,), 1, dtype=torch.int64), torch.full((1,), 3, dtype=torch.int64),
          torch.zeros(1, 6), torch.ones(1))
    return _spec(_Denoiser(modules["denoiser"]), ex, ["x", "t", "sensor", "cond", "cond_mask"], ["pred"], {},
                 meta={"postprocess": "pxd_diffusion_step"})


def _no_network(name):
    def hook(modules, cfg):
        raise ModelError(f"model {name}: a numpy table sampler with no network, nothing to export to ONNX "
                         "(generate with b2bkg generate)")
    return hook


# ------------------------------------------------------------------------------------------ SMC
class _Smc(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, pdg, mother_pdg, mother, x, mask, tokens):
        return torch.sigmoid(self.net({"pdg": pdg, "mother_pdg": mother_pdg, "mother": mother, "x": x, "mask": mask,
                                       "tokens": tokens}))


def _smc_nn(modules, cfg):
    from b2bkg.selmc.features import n_particle_features

    net = modules["net"]
    tag = bool(getattr(cfg, "tag_features", False))
    L, T = 4, 6
    ex = (torch.ones(1, L, dtype=torch.int64), torch.ones(1, L, dtype=torch.int64),
          torch.tensor([[-1, 0, 0, 1]], dtype=torch.int64), torch.zeros(1, L, n_particle_features(tag)),
          torch.ones(1, L, dtype=torch.bool), torch.ones(1, T, dtype=torch.int64))
    names = ["pdg", "mother_pdg", "mother", "x", "mask", "tokens"]
    dyn = {n: {0: "batch", 1: "particles"} for n in names[:5]}
    dyn["tokens"] = {0: "batch", 1: "tokens"}
    dyn["prob"] = {0: "batch"}
    meta = {"postprocess": "smc_prob", "skims": list(cfg.skims), "max_particles": int(cfg.max_particles),
            "max_tokens": int(cfg.max_tokens), "vocab": [int(v) for v in net.vocab.cpu().numpy()], "tag_features": tag}
    return _spec(_Smc(net), ex, names, ["prob"], {}, dynamic_axes=dyn, meta=meta)


EXPORT_HOOKS = {
    "ecl-gan": _ecl_gan,
    "ecl-cov": _ecl_cov,
    "ecl-ae": _ecl_ae,
    "pxd-wgan": _pxd_wgan,
    "pxd-event-gan": _pxd_flat(lambda cfg: (cfg.latent_dim,)),
    "pxd-iea-gan": _pxd_flat(lambda cfg: (N_SENSORS, cfg.latent_dim)),
    "pxd-diffusion": _pxd_diffusion,
    "smc-nn": _smc_nn,
    "pxd-fast": _no_network("pxd-fast"),
    "pxd-null": _no_network("pxd-null"),
}


# ------------------------------------------------------------------------------------------ inference
def onnx_generate(sampler, events, seed: int) -> dict:
    """Contract output of events ``events`` from an exported GAN/ECL graph, as the family's ``sample``
    (without conditions / ``keep``): ``{"ecl": EclWaveforms}`` or ``{"pxd": PxdDigits}``."""
    post = sampler.meta.get("postprocess")
    if post not in ("ecl_adc", "pxd_images"):
        raise ModelError(f"{sampler.path}: onnx_generate handles ECL and PXD GAN exports, not {post or 'this graph'}")
    out = sampler.sample(events, seed)[sampler.output_names[0]]
    if post == "ecl_adc":
        from b2bkg.ecl.models.data import to_adc
        from b2bkg.io.events import EclWaveforms

        return {"ecl": EclWaveforms(to_adc(torch.from_numpy(out)))}
    from b2bkg.pxd.models.pxd_data import images_to_digits

    m = sampler.meta
    return {"pxd": images_to_digits(torch.from_numpy(out), tuple(m["grid_factor"]), m["threshold_adu"])}


class _OrtDenoiser:
    """Callable standing in for ``DiffusionUNet`` in :func:`sample_images`: runs the ONNX step."""

    def __init__(self, sampler):
        self.s = sampler

    def __call__(self, x, t, sensor, cond, cond_mask=None):
        mask = torch.ones(len(x)) if cond_mask is None else cond_mask
        got = self.s.run(x=x.cpu().numpy(), t=t.cpu().numpy().astype(np.int64), sensor=sensor.cpu().numpy().astype(np.int64),
                         cond=cond.cpu().numpy(), cond_mask=mask.cpu().numpy().astype(np.float32))["pred"]
        return torch.from_numpy(got).to(x.device)


def diffusion_images_onnx(sampler, cfg, events, seed: int, conditions=None) -> torch.Tensor:
    """x0 (E*40, 1, H, W) of ``pxd-diffusion`` with the ONNX denoiser in the family's own sampler
    loop (DDIM or DDPM of ``cfg``, same per-event noise streams): equals ``sample_images`` within
    float tolerance. ``cfg``: the run's ``PxdDiffusionConfig``."""
    from b2bkg.pxd.models.diffusion import sample_images

    return sample_images(_OrtDenoiser(sampler), cfg, np.asarray(events, np.int64).reshape(-1), seed, "cpu", conditions)


def smc_predict_onnx(sampler, events, batch_size: int = 256) -> np.ndarray:
    """Pass probability (n_events, S) of ``SmcEvents`` ``events`` with an exported ``smc-nn`` graph, as
    :func:`b2bkg.selmc.models.family.predict` (generator-level particles only)."""
    from b2bkg.selmc.features import event_features
    from b2bkg.selmc.models.family import _generator_level, to_batch

    m = sampler.meta
    if m.get("postprocess") != "smc_prob":
        raise ModelError(f"{sampler.path}: not an smc-nn export")
    events = _generator_level(events)
    vocab = np.asarray(m["vocab"], np.int64)
    outs = []
    for a in range(0, events.n_events, batch_size):
        ev = events.slice(a, min(a + batch_size, events.n_events))
        f = event_features(ev, max_particles=m["max_particles"], max_tokens=m["max_tokens"], vocab=vocab,
                           tag_features=bool(m.get("tag_features", False)))
        b = to_batch(f)
        outs.append(sampler.run(**{k: v.numpy() for k, v in b.items() if k in sampler.input_names})["prob"])
    return np.concatenate(outs) if outs else np.zeros((0, len(m["skims"])), np.float32)
