"""Structured ECL waveform generator of ``ecl-gan``: pedestal + coloured noise + pile-up pulses.

The generator has the structure of a random-trigger ECL waveform, every part a learned
parameter (fitted from the ``--data`` file by :func:`fit_generator`, then trained adversarially
in :mod:`.gan`). For crystal ``c`` of ring ``r`` in event ``e`` (ADC, 31 samples ``t``)::

    w[c, t] = pedestal[c] + base[r, t]                                  (fitted buffers)
            + scale[c] * (L[r] (z_c + sum_m coh[r, m] zeta_m(e)))[t]      (coloured noise)
            + sum_k A_k h(t - tau_k)  -  mean pile-up[r]                  (pile-up pulses)

* ``L[r]`` (69, 31, 31), lower triangular: the ring's noise colouring (its covariance
  ``L L^T`` is the stationary electronics noise, edge effects included); ``z_c ~ N(0, 1)^31``.
* ``zeta_m(e) ~ N(0, 1)^31``, ``m < coherent_modes``: event-level white noise shared by every
  crystal of the event, loaded per ring by ``coh`` (69, M): the coherent noise that couples the
  noise power of crystals of one event.
* pile-up: photons of a Poisson process, rate ``lambda[r](e) = exp(log_rate[r] + rate_load[r] .
  phi(e))`` per tick with the event-level latent ``phi(e) ~ N(0, 1)^K`` (beam conditions move the
  background of all crystals of an event together), times uniform over the window and
  ``pre_ticks`` before it, amplitudes from a truncated power law ``A = a0[r] (1 - v (1 -
  R^-alpha))^(-1/alpha)`` (``v`` uniform; learned index ``alpha``, cut-off ``amax = a0 R``),
  rendered with the learned pulse kernel ``h`` (``kernel_sub`` points per tick over
  ``pre_ticks``, linear interpolation: sub-tick photon times).

Pile-up photons live in ``slots`` candidate slots per crystal, each occupied with probability
``p = lambda T / slots`` (a Binomial count, ~ Poisson for ``p << 1``); one uniform ``u`` per slot
decides occupancy (``u > 1 - p``) and amplitude (``Q((u - 1 + p) / p)``, continuous in ``p``),
so the rate, the spectrum and the kernel all get path-wise gradients. All randomness is two
standard-normal latents — ``z`` (8736, 31 + 2 slots) per crystal and ``e`` (1, 31 M + K) per
event — so :meth:`WaveGenerator.forward` is a fixed-shape graph (exported to ONNX) and sampling
renders only the occupied slots (:meth:`WaveGenerator.sample_event`); the noise is per-ring batched
matrix products, so one event of 8736 crystals costs about as much as the covariance sampler.

Nothing here imports the simulator or the detector payload: the structure is that of any ECL
random-trigger waveform, the numbers come from the data.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from b2bkg.core.progress import progress
from b2bkg.ecl.geometry import N_CRYSTALS, N_RINGS, RING_SIZES, RING_START

from .data import N_SAMPLES, _ring_of_crystal, fit_normalization, ring_blocks

__all__ = ["WaveGenerator", "fit_generator", "latent_dims"]


def latent_dims(slots: int, coherent_modes: int, rate_factors: int) -> tuple[int, int]:
    """(per-crystal, per-event) latent sizes: 31 noise normals + 2 per photon slot (occupancy /
    amplitude, time); the coherent-noise waveforms (modes x 31) + the pile-up rate factors."""
    return N_SAMPLES + 2 * slots, coherent_modes * N_SAMPLES + rate_factors


class WaveGenerator(nn.Module):
    """Structured generator (see the module docstring).

    Buffers (ADC): ``pedestal`` (8736,), ``base`` (69, 31) mean shape around the pedestal,
    ``scale`` (8736,) crystal noise factor (ring mean 1), ``sigma`` (69,) ring noise rms,
    ``a0`` (69,) lowest pile-up amplitude; ``slots`` photon slots per crystal. Parameters: ``chol`` (69, 31, 31) (lower triangle
    used), ``coh`` (69, M), ``log_rate`` (69,) photons per tick above ``a0``, ``rate_load``
    (69, K), ``log_alpha``, ``log_ratio`` (amax / a0, log), ``kernel`` (pre_ticks*sub + 1,).
    """

    def __init__(self, coherent_modes: int = 12, rate_factors: int = 2, pre_ticks: int = 24, kernel_sub: int = 8,
                 a0_sigma: float = 0.5, slots: int = 6):
        super().__init__()
        self.M, self.K, self.P, self.S = int(coherent_modes), int(rate_factors), int(pre_ticks), int(kernel_sub)
        self.slots = int(slots)
        self.a0_sigma = float(a0_sigma)
        self.register_buffer("pedestal", torch.full((N_CRYSTALS,), 3000.0))
        self.register_buffer("base", torch.zeros(N_RINGS, N_SAMPLES))
        self.register_buffer("scale", torch.ones(N_CRYSTALS))
        self.register_buffer("sigma", torch.full((N_RINGS,), 10.0))
        self.register_buffer("a0", torch.full((N_RINGS,), 5.0))
        self.register_buffer("ring", torch.as_tensor(_ring_of_crystal()), persistent=False)
        self.register_buffer("initialized", torch.zeros(()))
        self.chol = nn.Parameter(10.0 * torch.eye(N_SAMPLES).repeat(N_RINGS, 1, 1))
        self.coh = nn.Parameter(torch.zeros(N_RINGS, self.M))
        self.log_rate = nn.Parameter(torch.full((N_RINGS,), -4.0))
        self.rate_load = nn.Parameter(torch.zeros(N_RINGS, self.K))
        self.log_alpha = nn.Parameter(torch.tensor(math.log(1.5)))
        self.log_ratio = nn.Parameter(torch.tensor(math.log(100.0)))
        d = torch.arange(self.P * self.S + 1) / self.S
        self.kernel = nn.Parameter((d / 4.5) ** 4 * torch.exp(4 * (1 - d / 4.5)))
        self._blocks = ring_blocks()
        self.register_buffer("t", torch.arange(N_SAMPLES, dtype=torch.float32), persistent=False)

    # -- pieces --------------------------------------------------------------------------------
    def L(self) -> torch.Tensor:
        """(69, 31, 31) lower-triangular noise colouring, ADC."""
        return torch.tril(self.chol)

    def h(self, d: torch.Tensor) -> torch.Tensor:
        """Pulse kernel at ``d`` ticks after the photon (any shape), 0 outside [0, pre_ticks)."""
        pos = d * self.S
        n = self.P * self.S
        valid = (pos >= 0) & (pos < n)
        p = pos.clamp(0, n - 1e-4)
        i0 = p.floor().long()
        f = p - i0
        return torch.where(valid, self.kernel[i0] * (1 - f) + self.kernel[i0 + 1] * f, torch.zeros_like(p))

    def spectrum(self, ring: torch.Tensor):
        """(a0, alpha, R) for rings ``ring``: A = a0 (1 - v (1 - R^-alpha))^(-1/alpha)."""
        return self.a0[ring], self.log_alpha.exp(), 1.0 + self.log_ratio.exp()

    def quantile(self, v: torch.Tensor, ring: torch.Tensor) -> torch.Tensor:
        a0, alpha, r = self.spectrum(ring)
        return a0 * (1 - v * (1 - r ** (-alpha))).clamp_min(1e-12) ** (-1.0 / alpha)

    def mean_pileup(self) -> torch.Tensor:
        """Expected pile-up per sample of every ring (69,), ADC (rate averaged over phi)."""
        a0, alpha, r = self.spectrum(torch.arange(N_RINGS, device=self.a0.device))
        alpha = torch.where((alpha - 1).abs() < 1e-3, alpha + 2e-3, alpha)  # the formula's removable pole
        ea = a0 * alpha / (alpha - 1) * (1 - r ** (1 - alpha)) / (1 - r ** (-alpha))
        k = self.kernel
        integral = (k.sum() - 0.5 * (k[0] + k[-1])) / self.S  # trapezoid, ticks
        lam = torch.exp(self.log_rate + 0.5 * (self.rate_load**2).sum(1))
        return lam * ea * integral

    def _window(self) -> float:
        return float(self.P + N_SAMPLES)

    @property
    def z_dim(self) -> int:
        """Per-crystal latent size (:func:`latent_dims`)."""
        return latent_dims(self.slots, self.M, self.K)[0]

    @property
    def e_dim(self) -> int:
        """Per-event latent size (:func:`latent_dims`)."""
        return latent_dims(self.slots, self.M, self.K)[1]

    @property
    def norm(self) -> "WaveGenerator":
        """Callers written for the normalised-space networks use ``g.norm.ring`` and
        ``g.norm.denormalize``; this generator's output is already ADC (identity)."""
        return self

    def denormalize(self, w: torch.Tensor, crystal: torch.Tensor | None = None) -> torch.Tensor:
        """Identity: :meth:`forward` returns ADC already (see :attr:`norm`)."""
        return w

    def pileup_probability(self, loglam: torch.Tensor) -> torch.Tensor:
        """Occupancy of each of the ``slots`` photon slots, ``lambda T / slots`` (clamped to 1)."""
        return (loglam.exp() * (self._window() / self.slots)).clamp(max=1.0)

    def render(self, z: torch.Tensor, e: torch.Tensor, crystal: torch.Tensor | None = None, sparse: bool = False) -> torch.Tensor:
        """Waveforms from latents: z (B, C, z_dim) of crystals ``crystal`` (C,) (None: all 8736),
        e (B, 1, e_dim) shared by the C crystals of each of the B events -> (B, C, 31) float ADC.

        Pile-up: each crystal has ``slots`` candidate photons; slot j is occupied if ``u > 1 - p``
        (``u = Phi(z_k)``, ``p`` the occupancy) and then has amplitude ``Q((u - 1 + p) / p)``
        (continuous in ``p``: path-wise gradients for the rate) and time ``-P + Phi(z_t) (P + 31)``.
        The number of photons is Binomial(slots, p) ~ Poisson(lambda T) for ``p << 1``.
        ``sparse``: render only the occupied slots (sampling; numerically the same sum).
        """
        n_s, k_s = N_SAMPLES, self.slots
        cr = torch.arange(N_CRYSTALS, device=z.device) if crystal is None else crystal
        ring = self.ring[cr]
        b, c = z.shape[0], z.shape[1]
        zeta = e[:, 0, : self.M * n_s].reshape(b, self.M, n_s)
        phi = e[:, 0, self.M * n_s:]
        x = z[..., :n_s]
        if self.M:
            x = x + torch.matmul(self.coh[ring], zeta)  # (B, C, 31)
        L = self.L()
        if crystal is None:  # all crystals in order: per-ring-block batched products
            out = torch.cat([torch.matmul(x[:, c0:c0 + nr * size].reshape(b, nr, size, n_s), L[r0:r0 + nr].transpose(1, 2)).reshape(b, nr * size, n_s)
                             for r0, nr, size, c0 in self._blocks], dim=1)
        else:
            out = torch.einsum("cij,bcj->bci", L[ring], x)
        out = out * self.scale[cr][:, None] + (self.pedestal[cr][:, None] + self.base[ring] - self.mean_pileup()[ring][:, None])
        loglam = self.log_rate[ring] + phi @ self.rate_load[ring].T if self.K else self.log_rate[ring].expand(b, -1)  # (B, C)
        p = self.pileup_probability(loglam)[..., None]  # (B, C, 1)
        half = torch.tensor(0.5, dtype=z.dtype, device=z.device)
        u = half * (1 + torch.erf(z[..., n_s:n_s + k_s] * 0.7071067811865476))  # (B, C, slots)
        ut = half * (1 + torch.erf(z[..., n_s + k_s:] * 0.7071067811865476))
        keep = u > 1 - p
        v = ((u - (1 - p)) / p.clamp_min(1e-12)).clamp(0, 1)
        if sparse:
            bi, ci, si = keep.nonzero(as_tuple=True)
            if len(bi):
                amp = self.quantile(v[bi, ci, si], ring[ci])
                tau = -self.P + ut[bi, ci, si] * self._window()
                rows = bi * c + ci
                out.view(b * c, n_s).index_add_(0, rows, amp[:, None] * self.h(self.t[None, :] - tau[:, None]))
            return out
        amp = self.quantile(v, ring[:, None]) * keep
        tau = -self.P + ut * self._window()
        return out + (amp[..., None] * self.h(self.t - tau[..., None])).sum(-2)

    def forward(self, z: torch.Tensor, e: torch.Tensor, ring=None, all_crystals: bool = True) -> torch.Tensor:
        """All 8736 crystals: z (B, 8736, z_dim), e (B, 1, e_dim) -> (B, 8736, 31) float ADC
        (dense: the graph exported to ONNX; ``ring`` and ``all_crystals`` are accepted for
        callers of the normalised-space networks and must describe all crystals)."""
        return self.render(z, e)

    def draw(self, crystal: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Training / validation draw: crystals (S, k) of S independent events -> (S, k, 31) ADC.

        Every row is one event (its latent e shared by its k crystals); the same crystal may
        appear in several rows. Random numbers from ``gen`` (None: torch's global RNG)."""
        s, k = crystal.shape
        dev = crystal.device
        z = torch.randn(s, k, self.z_dim, generator=gen, device=dev)
        e = torch.randn(s, 1, max(self.e_dim, 1), generator=gen, device=dev)[..., : self.e_dim]
        zeta = e[:, 0, : self.M * N_SAMPLES].reshape(s, self.M, N_SAMPLES)
        phi = e[:, 0, self.M * N_SAMPLES:]
        ring = self.ring[crystal]
        x = z[..., :N_SAMPLES] + torch.einsum("skm,smt->skt", self.coh[ring], zeta)
        noise = torch.einsum("skij,skj->ski", self.L()[ring], x) * self.scale[crystal][..., None]
        loglam = self.log_rate[ring] + torch.einsum("skf,sf->sk", self.rate_load[ring], phi)
        pu = self.pileup_from_latents(loglam, ring, z[..., N_SAMPLES:])
        return self.pedestal[crystal][..., None] + self.base[ring] - self.mean_pileup()[ring][..., None] + noise + pu

    def pileup_from_latents(self, loglam: torch.Tensor, ring: torch.Tensor, zk: torch.Tensor) -> torch.Tensor:
        """Pile-up (..., 31) ADC of waveforms with log-rates ``loglam`` (...), rings ``ring`` (...)
        and slot latents ``zk`` (..., 2 * slots) (normals: occupancy/amplitude, then time)."""
        p = self.pileup_probability(loglam)[..., None]
        u = 0.5 * (1 + torch.erf(zk[..., : self.slots] * 0.7071067811865476))
        ut = 0.5 * (1 + torch.erf(zk[..., self.slots:] * 0.7071067811865476))
        keep = u > 1 - p
        v = ((u - (1 - p)) / p.clamp_min(1e-12)).clamp(0, 1)
        amp = self.quantile(v, ring[..., None]) * keep
        tau = -self.P + ut * self._window()
        return (amp[..., None] * self.h(self.t - tau[..., None])).sum(-2)

    # -- full events ---------------------------------------------------------------------------
    def sample_event(self, gen: torch.Generator) -> torch.Tensor:
        """All 8736 waveforms of one event, (8736, 31) float ADC; randomness only from ``gen``:
        first e (1, e_dim) (at least one number), then z (8736, z_dim) — the order of the ONNX
        sampler's draws. Sparse pile-up rendering, equal to :meth:`forward` up to float rounding."""
        dev = self.pedestal.device
        e = torch.randn((1, max(self.e_dim, 1)), generator=gen)[:, : self.e_dim].to(dev)
        z = torch.randn((N_CRYSTALS, self.z_dim), generator=gen).to(dev)
        return self.render(z[None], e[None], sparse=True)[0]


# -------------------------------------------------------------------------------------------------
# fit from data (the initialisation; method of moments / simulated moments)
# -------------------------------------------------------------------------------------------------
def _principal_factors(c: np.ndarray, k: int, iters: int = 10) -> np.ndarray:
    """Low-rank ``W`` (R, k) with ``W W^T`` ~ the off-diagonal of the symmetric ``c`` (R, R)."""
    c = 0.5 * (c + c.T)
    off = c - np.diag(np.diag(c))
    d = np.abs(off).max(axis=1)
    w = np.zeros((len(c), k))
    for _ in range(iters):
        m = off + np.diag(d)
        ev, vec = np.linalg.eigh(m)
        idx = np.argsort(ev)[::-1][:k]
        ev = np.clip(ev[idx], 0, None)
        w = vec[:, idx] * np.sqrt(ev)[None, :]
        d = (w**2).sum(1)
    return w


def _psd(c: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    ev, vec = np.linalg.eigh(0.5 * (c + np.swapaxes(c, -1, -2)))
    ev = np.maximum(ev, floor * ev.max(axis=-1, keepdims=True))
    return (vec * ev[..., None, :]) @ np.swapaxes(vec, -1, -2)


def _shape_template(kernel_fn, n_phase: int = 400, lags: int = 6) -> np.ndarray:
    """Average peak-aligned, peak-normalised tick-sampled pulse of ``kernel_fn`` over sub-tick phases."""
    ph = (np.arange(n_phase) + 0.5) / n_phase
    t = np.arange(-20, 40)[None, :] + ph[:, None]
    p = kernel_fn(t)
    i = p.argmax(axis=1)
    rows = np.arange(n_phase)[:, None]
    cols = i[:, None] + np.arange(-lags, lags + 1)[None, :]
    return (p[rows, cols] / p[rows, i[:, None]]).mean(0)


def _crrc(d, n, tp):
    d = np.maximum(d, 0.0)
    return np.where(d > 0, (d / tp) ** n * np.exp(n * (1 - d / tp)), 0.0)


def refine_scale(w: np.ndarray, sel: np.ndarray, ped: np.ndarray, base: np.ndarray, scale: np.ndarray, sig: np.ndarray,
                 cut_sigma: float = 7.0, iters: int = 2) -> np.ndarray:
    """Per-crystal noise factor by maximum likelihood given the ring's covariance.

    For a Gaussian ``x ~ N(0, s^2 C)`` with ``C`` known, ``s^2 = mean(x^T C^-1 x) / 31`` uses all 31
    degrees of freedom of every waveform (a robust MAD of the samples uses far fewer): with ``n``
    quiet waveforms (``max - min < cut_sigma`` ring noise rms) its relative error is
    ``~ 1 / sqrt(62 n)``. ``C`` is the ring's covariance of the quiet waveforms of all its
    crystals, each divided by its current factor; two iterations.

    Args:
        w: (n_events, 8736, 31) ADC; sel: (n_events, 8736) selected (ignored); ped (8736,),
        base (69, 31) ADC; scale (8736,) starting factors; sig (69,) ring noise rms, ADC.
    Returns:
        (8736,) factors, mean 1 in every ring.
    """
    scale = np.array(scale, dtype=np.float64)
    for _ in range(iters):
        new = scale.copy()
        for r in range(N_RINGS):  # 69 rings
            a, b = RING_START[r], RING_START[r] + RING_SIZES[r]
            x = (w[:, a:b].astype(np.float32) - (ped[a:b, None] + base[r])[None].astype(np.float32)) / scale[None, a:b, None].astype(np.float32)
            quiet = ~sel[:, a:b] & (x.max(-1) - x.min(-1) < cut_sigma * sig[r])
            xq = x[quiet].astype(np.float64)
            c = np.cov(xq.T) if len(xq) > N_SAMPLES else np.eye(N_SAMPLES)
            cinv = np.linalg.inv(c + 1e-6 * np.trace(c) / N_SAMPLES * np.eye(N_SAMPLES))
            xc = x.astype(np.float64) - xq.mean(0)
            q = np.einsum("eci,ij,ecj->ec", xc, cinv, xc, optimize=True) / N_SAMPLES  # (n_events, size)
            nq = quiet.sum(0)
            s2 = np.where(quiet, q, 0.0).sum(0) / np.maximum(nq, 1)
            f = np.where(nq > 0, np.sqrt(np.maximum(s2, 1e-6)), 1.0)
            new[a:b] = scale[a:b] * f
            new[a:b] /= new[a:b].mean()
        scale = new
    return scale


@torch.no_grad()
def fit_generator(g: WaveGenerator, waveforms: np.ndarray, selected: np.ndarray, seed: int = 0, mc_per_ring: int = 12000,
                  cut_sigma: float = 7.0, pulse_sigma: float = 10.0) -> dict:
    """Fit every part of ``g`` from non-selected training waveforms (n_events, 8736, 31) ADC.

    Steps: per-crystal pedestal, ring mean shape and noise level (:func:`fit_normalization`); the
    pulse kernel (a CR-(RC)^n shape whose peak-aligned tick-sampled average matches that of the
    data's large pulses); the amplitude index (Hill estimator of large-pulse heights); per ring the
    photon rate (fraction of waveforms with a pulse above ``pulse_sigma`` noise rms, matched by
    simulating the model) and the noise covariance (covariance of the waveforms below
    ``cut_sigma`` minus what the model's pile-up and the cut add, by simulation with common
    random numbers); the coherent loadings (cross-ring covariance of per-event ring-mean
    waveforms) and the rate loadings (cross-ring covariance of per-event pulse fractions).
    Returns summary numbers.
    """
    w = np.asarray(waveforms)
    sel = np.asarray(selected, bool)
    n_ev = len(w)
    stats = fit_normalization(w, sel)
    ring = _ring_of_crystal()
    nsd = stats["noise_sd"].astype(np.float64)
    sig = np.bincount(ring, weights=nsd, minlength=N_RINGS) / RING_SIZES
    scale = nsd / sig[ring]
    ped = stats["pedestal"].astype(np.float64)
    base = stats["ring_shape"].astype(np.float64)

    scale = refine_scale(w, sel, ped, base, scale, sig, cut_sigma)

    cov_cut = np.zeros((N_RINGS, N_SAMPLES, N_SAMPLES))
    frac = np.zeros(N_RINGS)
    ev_big = np.zeros((n_ev, N_RINGS))
    ev_k = np.zeros((n_ev, N_RINGS))
    ring_mean = np.zeros((n_ev, N_RINGS, N_SAMPLES), np.float32)
    templates, heights = [], []
    bar = progress(total=N_RINGS, desc="fit ecl-gan", unit="ring")
    for r in range(N_RINGS):  # 69 rings: per-ring statistics over (events x crystals) at once
        a, b = RING_START[r], RING_START[r] + RING_SIZES[r]
        x = (w[:, a:b].astype(np.float32) - (ped[a:b, None] + base[r])[None].astype(np.float32)) / scale[None, a:b, None].astype(np.float32)
        k = ~sel[:, a:b]
        mm = x.max(-1) - x.min(-1)
        ring_mean[:, r] = np.where(k[..., None], x, 0).sum(1) / np.maximum(k.sum(1), 1)[:, None]
        big = k & (mm > pulse_sigma * sig[r])
        frac[r] = big.sum() / k.sum()
        ev_big[:, r], ev_k[:, r] = big.sum(1), k.sum(1)
        quiet = k & (mm < cut_sigma * sig[r])
        xq = x[quiet].astype(np.float64)
        xq -= xq.mean(0)
        cov_cut[r] = xq.T @ xq / max(len(xq) - 1, 1)
        # large, isolated-looking pulses peaking inside the window: shape and height
        xb = x[big]
        im = xb.argmax(-1)
        okp = (im >= 8) & (im <= 22)
        xb, im = xb[okp], im[okp]
        if len(xb):
            pre = np.median(xb[:, :4], axis=1)
            hgt = xb[np.arange(len(xb)), im] - pre
            heights.append(hgt[hgt > 0])
            cols = im[:, None] + np.arange(-6, 7)[None, :]
            tm = (xb[np.arange(len(xb))[:, None], cols] - pre[:, None]) / np.maximum(hgt, 1e-6)[:, None]
            good = hgt > 20 * sig[r]
            if good.any():
                templates.append(tm[good])
        bar.update(1)
    bar.close()

    # pulse kernel: CR-(RC)^n shape matching the data's peak-aligned template
    tmpl = np.concatenate(templates).mean(0) if templates else None
    best = (4.0, 4.5)
    if tmpl is not None:
        errs = {}
        for n in (2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 14.0):
            for tp in np.arange(2.0, 7.01, 0.25):
                errs[(n, tp)] = float(((_shape_template(lambda d: _crrc(d, n, tp)) - tmpl) ** 2).sum())
        best = min(errs, key=errs.get)
    d = np.arange(g.P * g.S + 1) / g.S
    # pre-window: the model's window starts pre_ticks before the first sample
    g.kernel.copy_(torch.as_tensor(_crrc(d, *best), dtype=torch.float32))

    # amplitude spectrum: truncated power-law maximum likelihood of large-pulse heights
    hh = np.concatenate(heights) if heights else np.array([100.0])
    h_min = 6.0 * float(np.median(sig))
    tail = hh[hh > h_min]
    amax = float(hh.max()) * 1.02
    alpha = 1.5
    if len(tail) > 20:
        grid = np.linspace(0.2, 6.0, 300)
        lt = np.log(tail / h_min).sum()
        ll = len(tail) * np.log(grid / (1 - (h_min / amax) ** grid)) - grid * lt
        alpha = float(grid[np.argmax(ll)])
    a0 = g.a0_sigma * sig
    g.a0.copy_(torch.as_tensor(a0, dtype=torch.float32))
    g.log_alpha.fill_(math.log(alpha))
    g.log_ratio.fill_(math.log(max(amax / float(np.median(a0)) - 1.0, 1.0)))

    g.pedestal.copy_(torch.as_tensor(ped, dtype=torch.float32))
    g.base.copy_(torch.as_tensor(base, dtype=torch.float32))
    g.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
    g.sigma.copy_(torch.as_tensor(sig, dtype=torch.float32))
    g.rate_load.zero_()
    g.coh.zero_()

    # rates and noise covariance by simulated moments (per ring, common random numbers)
    gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF)
    rings = torch.arange(N_RINGS)
    z = torch.randn(N_RINGS, mc_per_ring, N_SAMPLES, generator=gen)
    T = g._window()
    # start: rate from the pulse fraction, assuming every photon above the threshold is visible
    a0t, alpha_t, rt = g.spectrum(rings)
    thr = torch.as_tensor(pulse_sigma * sig, dtype=torch.float32)
    surv = ((thr / a0t).clamp_min(1.0) ** (-alpha_t) - rt ** (-alpha_t)) / (1 - rt ** (-alpha_t))
    lam = torch.as_tensor(-np.log1p(-np.clip(frac, 0, 0.99)), dtype=torch.float32) / (T * surv.clamp_min(1e-6) * 0.6)
    lam = lam.clamp(1e-6, g.slots / T)
    c_noise = torch.as_tensor(_psd(cov_cut), dtype=torch.float32)
    mm_fn = lambda y: y.max(-1).values - y.min(-1).values  # noqa: E731
    for it in range(3):
        g.log_rate.copy_(torch.log(lam.clamp_min(1e-8)))
        L = torch.linalg.cholesky(c_noise)
        noise = torch.einsum("rij,rnj->rni", L, z)
        pu = torch.zeros_like(noise)
        for r in range(N_RINGS):  # ring by ring bounds the memory of the photon slots
            zk = torch.randn(mc_per_ring, 2 * g.slots, generator=gen)
            pu[r] = g.pileup_from_latents(g.log_rate[r].expand(mc_per_ring), rings[r].expand(mc_per_ring), zk)
        y = noise + pu
        m = mm_fn(y)
        f_model = (m > thr[:, None]).float().mean(1)
        ratio = ((torch.as_tensor(frac, dtype=torch.float32) + 1e-4) / (f_model + 1e-4)).clamp(0.2, 5.0)
        lam = (lam * ratio**0.9).clamp(1e-6, g.slots / T)
        q = (m < cut_sigma * torch.as_tensor(sig, dtype=torch.float32)[:, None])
        yq = torch.where(q[..., None], y, torch.zeros_like(y))
        nq = q.sum(1).clamp_min(2)[:, None, None].float()
        mq = yq.sum(1, keepdim=True) / nq
        cq = torch.einsum("rni,rnj->rij", yq, yq) / nq - mq.transpose(1, 2) @ mq
        cn = torch.einsum("rni,rnj->rij", noise, noise) / mc_per_ring
        delta = cq - cn  # what pile-up and the cut do to the covariance
        c_noise = torch.as_tensor(_psd(cov_cut - delta.double().numpy()), dtype=torch.float32)
    del z, noise, pu, y
    g.log_rate.copy_(torch.log(lam.clamp_min(1e-8)))

    # coherent noise loadings: cross-ring covariance of per-event ring means
    rm = ring_mean.astype(np.float64)
    rm -= rm.mean(0, keepdims=True)
    kmat = np.einsum("eri,esi->rs", rm, rm) / (n_ev * N_SAMPLES)
    L0 = np.linalg.cholesky(c_noise.double().numpy())
    coh = np.zeros((N_RINGS, g.M))
    for _ in range(2):
        lnorm = np.einsum("rij,sij->rs", L0, L0) / N_SAMPLES
        coh = _principal_factors(kmat / lnorm, g.M) if g.M else coh
        L0 = np.linalg.cholesky(c_noise.double().numpy() / (1.0 + (coh**2).sum(1))[:, None, None])
    g.coh.copy_(torch.as_tensor(coh, dtype=torch.float32))
    g.chol.copy_(torch.as_tensor(L0, dtype=torch.float32))

    # rate loadings: covariance of per-event pulse fractions between theta bins (contiguous
    # rings with equal expected pulse counts: the barrel rings alone are too sparse)
    if g.K and n_ev > 3:
        n_bins = 8
        cum = np.cumsum(ev_big.sum(0))
        edges = np.searchsorted(cum, np.linspace(0, cum[-1], n_bins + 1)[1:-1])
        bin_of_ring = np.searchsorted(edges, np.arange(N_RINGS), side="right")
        fb = np.stack([ev_big[:, bin_of_ring == j].sum(1) / np.maximum(ev_k[:, bin_of_ring == j].sum(1), 1) for j in range(n_bins)], 1)
        fm = fb.mean(0)
        rel = np.where(fm > 0, fb / np.maximum(fm, 1e-12) - 1.0, 0.0)
        cov = rel.T @ rel / (n_ev - 1)
        # keep only covariances that stand out of their Poisson estimation noise (3 sd)
        sd = np.sqrt(np.outer(np.diag(cov), np.diag(cov)) / n_ev)
        cov = np.sign(cov) * np.maximum(np.abs(cov) - 3.0 * sd, 0.0)
        load = _principal_factors(cov, g.K)  # (n_bins, K)
        g.rate_load.copy_(torch.as_tensor(load[bin_of_ring], dtype=torch.float32))
    g.initialized.fill_(1.0)
    return {"kernel_n": best[0], "kernel_peak_ticks": best[1], "alpha": alpha, "amax_adu": amax,
            "pulse_fraction_mean": float(frac.mean()), "coherent_rms_rel": float(np.sqrt((coh**2).sum(1)).mean())}
