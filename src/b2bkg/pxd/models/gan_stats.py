"""Event-statistics matching for the PXD image GANs (a feature-matching regulariser of the generator).

The adversarial loss of a small GAN trained for minutes on a CPU shapes clusters but leaves the
*counting* statistics far off (occupancy -56 % to +225 %, charges piled up at the threshold,
sensor-occupancy correlations ~0). This module adds to the generator loss a term that matches
a few summary statistics of generated samples to those of the training data (feature matching,
Salimans et al. 2016, with the statistics chosen from the evaluation's physics):

For every sample ``b`` (an event, or one image for ``pxd-wgan``) and group ``g`` (its 40 sensors,
or 1 for ``pxd-wgan``), the fraction of the 192 000 pixels at or above each charge level
``levels_adu`` (``levels_adu[0]`` = the 7-ADU threshold, so ``F[b, g, 0]`` is the occupancy)::

    F[b, g, k] = mean over pixels of 1[ADU >= q_k]            (B, G, K)

computed exactly in the forward pass; the backward pass uses the derivative of
``sigmoid(sharpness * (x - x_k))`` in the transformed units ``x`` (a straight-through estimator), so
pixels near a level get gradient and the forward value is the same hard count as the evaluation's.
Matched, against the same numbers of the training file (computed once from the sparse digits,
:meth:`StatsMatcher.set_targets`):

* ``occ``: per group, ``(log mean_b F[b, g, 0] - log target)^2`` averaged over groups (occupancy per
  sensor);
* ``cov``: the G x G covariance of ``l = log F[b, g, 0]`` (the event-to-event occupancy
  fluctuations: diagonal = per-image occupancy spread, off-diagonal = sensor correlations from the
  shared beam conditions of an event), difference in units of the data's standard deviations,
  squared; the mean over the G diagonal entries plus the mean over the G(G-1) off-diagonal ones
  (equal weight to the spread of each sensor and to the shared part);
* ``charge``: pooled over groups, ``(log F_k / F_0)`` for k >= 1 (the charge spectrum above the
  threshold as a survival function at the levels), squared differences averaged.

A generator step sees few samples (one event in the small configs), so the generated statistics are
exponential moving averages over steps (``ema_decay``): the current batch enters with weight
``1 - ema_decay`` and carries the gradient, the older part is a detached buffer (bias-corrected as
in Adam). Each term is divided by ``1 - ema_decay`` so a weight means the same for any decay.

Example:
    >>> import torch
    >>> m = StatsMatcher(n_groups=2, levels_adu=(7, 20))
    >>> f = torch.tensor([[[0.01, 0.004], [0.02, 0.01]], [[0.012, 0.005], [0.018, 0.008]]])  # (N, G, K)
    >>> m.set_targets(f)
    >>> x = torch.full((1, 2, 100), -1.0, requires_grad=True)  # no hit at all
    >>> terms = m.loss(x, torch.ones(100, dtype=torch.bool), update=False)
    >>> sorted(terms), bool(terms["occ"] > 0)
    (['charge', 'cov', 'occ'], True)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits
from b2bkg.pxd.images import PAD_ROWS

__all__ = ["StatsMatcher", "level_fractions", "digits_level_fractions", "level_edges", "valid_cells", "DEFAULT_LEVELS_ADU",
           "event_factor_loadings", "init_event_factors", "init_event_spread"]

#: charge levels (ADU) of the matched survival function: the 7-ADU threshold, then roughly the
#: 10 ... 99 % quantiles of the truth pixel charge (median 18 ADU)
DEFAULT_LEVELS_ADU = (7, 9, 12, 16, 22, 30, 42, 60, 100)
_EPS = 1e-7


def level_edges(levels_adu) -> torch.Tensor:
    """x value of each level's rounding edge ``q - 0.5`` ADU: ``2 log(q + 0.5) / log 256 - 1``; (K,) float32."""
    q = torch.as_tensor(levels_adu, dtype=torch.float64)
    return (2.0 * torch.log(q + 0.5) / np.log(256.0) - 1.0).to(torch.float32)


def valid_cells(factor) -> torch.Tensor:
    """Bool mask (fr*fc * 256/fr * 768/fc,) of the internal-grid values that are real pixels
    (rows 250..255 of the padded 256 x 768 image are padding), in the flattened space-to-depth layout."""
    from .pxd_data import space_to_depth

    img = torch.zeros(1, 1, PAD_ROWS, N_VCELLS, dtype=torch.bool)
    img[..., :N_UCELLS, :] = True
    return space_to_depth(img.to(torch.float32), factor).reshape(-1) > 0.5


class _LevelFractions(torch.autograd.Function):
    """Hard fractions forward, sigmoid-derivative gradient backward (memory: only ``x`` is kept)."""

    @staticmethod
    def forward(ctx, x, edges, valid, sharpness):
        ctx.save_for_backward(x, edges, valid)
        ctx.sharpness = float(sharpness)
        n = valid.sum().clamp(min=1)
        out = torch.stack([((x >= e) & valid).sum(-1) for e in edges], -1).to(x.dtype) / n  # (B, G, K)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, edges, valid = ctx.saved_tensors
        s = ctx.sharpness
        n = valid.sum().clamp(min=1)
        grad = torch.zeros_like(x)
        for k, e in enumerate(edges):
            sig = torch.sigmoid(s * (x - e))
            grad += grad_out[..., k:k + 1] * (s * sig * (1 - sig))
        return grad * valid.to(x.dtype) / n, None, None, None


def level_fractions(x: torch.Tensor, valid: torch.Tensor, levels_adu=DEFAULT_LEVELS_ADU, sharpness: float = 5.0) -> torch.Tensor:
    """Fraction of pixels at or above each charge level, differentiable (straight-through).

    Args:
        x: (B, G, P) generator output in transformed units (values of the P grid positions of one
            image, e.g. the flattened (fr*fc, R, C) space-to-depth cells).
        valid: (P,) bool, True for real pixels (False: padding rows).
        levels_adu: K charge levels, ADU (a pixel counts at level q if its rounded charge is >= q).
        sharpness: slope of the sigmoid whose derivative is the backward pass, per unit of x.

    Returns:
        (B, G, K) fractions of the valid pixels; forward values are exact hard counts.
    """
    return _LevelFractions.apply(x, level_edges(levels_adu).to(x.device), valid.to(x.device), sharpness)


def digits_level_fractions(digits: PxdDigits, levels_adu=DEFAULT_LEVELS_ADU) -> np.ndarray:
    """The same fractions for sparse truth digits: (n_events, 40, K) float64, vectorized."""
    levels = np.asarray(levels_adu)
    k = len(levels)
    idx = np.searchsorted(levels, digits.charge.astype(np.int64), side="right")  # levels passed, 0..K
    img = digits.event_index().astype(np.int64) * N_SENSORS + digits.sensor.astype(np.int64)
    h = np.bincount(img * (k + 1) + idx, minlength=digits.n_events * N_SENSORS * (k + 1)).reshape(-1, k + 1)
    at_least = np.cumsum(h[:, ::-1], 1)[:, ::-1][:, 1:]  # (n*40, K): hits with >= levels[k]
    return (at_least / float(N_UCELLS * N_VCELLS)).reshape(digits.n_events, N_SENSORS, k)


class StatsMatcher(nn.Module):
    """Targets from data and running generated statistics (buffers, saved in checkpoints), and the loss.

    Args:
        n_groups: G (40 sensors of an event; 1 for single images).
        levels_adu: K charge levels (``levels_adu[0]`` = the threshold).
        sharpness: backward sigmoid slope (see :func:`level_fractions`).
        ema_decay: decay of the running generated statistics per generator step.
    """

    def __init__(self, n_groups: int, levels_adu=DEFAULT_LEVELS_ADU, sharpness: float = 5.0, ema_decay: float = 0.95):
        super().__init__()
        if list(levels_adu) != sorted(set(levels_adu)) or not levels_adu:
            raise ConfigError(f"fm_levels_adu: {list(levels_adu)} must be increasing charge levels")
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError(f"fm_ema_decay: {ema_decay} must be in [0, 1)")
        self.levels_adu, self.sharpness, self.ema_decay = tuple(int(q) for q in levels_adu), float(sharpness), float(ema_decay)
        g, k = int(n_groups), len(levels_adu)
        for name, shape in (("target_occ", (g,)), ("target_logmean", (g,)), ("target_cov", (g, g)), ("target_levels", (k,)),
                            ("ema_occ", (g,)), ("ema_m1", (g,)), ("ema_m2", (g, g)), ("ema_levels", (k,))):
            self.register_buffer(name, torch.zeros(shape))
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def set_targets(self, f: np.ndarray | torch.Tensor) -> None:
        """Data statistics from level fractions ``f`` (N, G, K) of N training samples (N >= 2)."""
        f = torch.as_tensor(np.asarray(f), dtype=torch.float64)
        if f.ndim != 3 or f.shape[1:] != (self.target_occ.shape[0], self.target_levels.shape[0]) or f.shape[0] < 2:
            raise ConfigError(f"StatsMatcher.set_targets: fractions of shape {tuple(f.shape)}, expected (N >= 2, "
                              f"{self.target_occ.shape[0]}, {self.target_levels.shape[0]})")
        occ = f[..., 0]
        if (occ.mean(0) <= 0).any():
            raise ConfigError("StatsMatcher.set_targets: a group has no fired pixel in the training data")
        l = torch.log(occ + _EPS)
        self.target_occ.copy_(occ.mean(0))
        self.target_logmean.copy_(l.mean(0))
        self.target_cov.copy_(torch.cov(l.T, correction=0).reshape(self.target_cov.shape))  # as the running estimate
        self.target_levels.copy_(f.mean((0, 1)))
        self.ready.fill_(True)

    def loss(self, x: torch.Tensor, valid: torch.Tensor, update: bool = True) -> dict[str, torch.Tensor]:
        """Matching terms for generated samples ``x`` (B, G, P) in transformed units.

        Returns ``{"occ", "cov", "charge"}`` scalars (differentiable w.r.t. ``x``); ``update``
        folds the batch into the running buffers (once per generator step).
        """
        if not bool(self.ready):
            raise RuntimeError("StatsMatcher.loss before set_targets")
        d = self.ema_decay
        f = level_fractions(x, valid, self.levels_adu, self.sharpness)  # (B, G, K)
        occ = f[..., 0]  # (B, G)
        l = torch.log(occ + _EPS) - self.target_logmean  # centred on the data: small numbers
        batch = {"occ": occ.mean(0), "m1": l.mean(0), "m2": l.T @ l / len(l), "levels": f.mean((0, 1))}
        corr = 1.0 - d ** (int(self.ema_steps) + 1)  # Adam-style bias correction
        run = {k: (d * getattr(self, f"ema_{k}") + (1 - d) * v) / corr for k, v in batch.items()}
        cov = run["m2"] - torch.outer(run["m1"], run["m1"])
        sd = self.target_cov.diagonal().clamp(min=1e-12).sqrt()
        w = 1.0 / (1.0 - d)
        dev2 = ((cov - self.target_cov) / torch.outer(sd, sd)).pow(2)  # (G, G)
        g = dev2.shape[0]
        # diagonal (per-sensor spread) and off-diagonal (shared fluctuation) averaged separately: a mean
        # over all G x G entries would give the G variances a weight of 1/G, and a generator whose own
        # per-sensor spread is too large dilutes the correlations without the term noticing
        cov_term = dev2.diagonal().mean() + (dev2.sum() - dev2.diagonal().sum()) / (g * g - g) if g > 1 else dev2.mean()
        terms = {
            "occ": w * (torch.log(run["occ"] + _EPS) - torch.log(self.target_occ)).pow(2).mean(),
            "cov": w * cov_term,
            "charge": w * (torch.log(run["levels"][1:] + _EPS) - torch.log(run["levels"][:1] + _EPS)
                           - torch.log(self.target_levels[1:] + _EPS) + torch.log(self.target_levels[:1] + _EPS)).pow(2).mean(),
        }
        if update:
            with torch.no_grad():
                for k, v in batch.items():
                    getattr(self, f"ema_{k}").mul_(d).add_((1 - d) * v.detach())
                self.ema_steps += 1
        return terms


# ----------------------------------------------------------------------------- family helpers
def build_stats(cfg, n_groups: int) -> dict[str, StatsMatcher]:
    """``{"stats": StatsMatcher}`` for a family's ``build`` when ``cfg.uses_stats``, else ``{}``."""
    if not cfg.uses_stats:
        return {}
    return {"stats": StatsMatcher(n_groups, cfg.fm_levels_adu, cfg.fm_sharpness, cfg.fm_ema_decay)}


def prepare_stats(cfg, modules, digits: PxdDigits) -> None:
    """Set the data targets from the training digits (``Family.prepare``): per event and sensor
    (G = 40), or per image pooled over sensors (G = 1)."""
    if "stats" not in modules:
        return
    m = modules["stats"]
    f = digits_level_fractions(digits, cfg.fm_levels_adu)  # (n, 40, K)
    if m.target_occ.shape[0] == 1:
        f = f.reshape(-1, 1, f.shape[-1])
    m.set_targets(f)


def stats_loss(cfg, modules, x: torch.Tensor, factor) -> tuple[torch.Tensor | None, dict[str, float]]:
    """Weighted matching loss of generated ``x`` ((B, G, fr*fc, R, C), or (B, 1, 256, 768) images)
    and its parts for the log; ``(None, {})`` without a ready ``stats`` module (e.g. before ``prepare``)."""
    m = modules.get("stats")
    if m is None or not bool(m.ready):
        return None, {}
    b, g = x.shape[:2]
    valid = valid_cells(factor).to(x.device)
    terms = m.loss(x.reshape(b, g, -1), valid)
    total = cfg.fm_occ * terms["occ"] + cfg.fm_cov * terms["cov"] + cfg.fm_charge * terms["charge"]
    return total, {f"fm_{k}": float(v.detach()) for k, v in terms.items()}


@torch.no_grad()
def calibrate_offsets(generate, offset: torch.Tensor, target_occ: torch.Tensor, factor, threshold_adu: int,
                      lo: float = -4.0, hi: float = 4.0, iters: int = 14) -> torch.Tensor:
    """Data-dependent initialisation: bisection on pre-tanh output offsets until the generator's
    occupancy of each group matches the training data's (as one initialises an output bias to the
    data mean), so training starts from the right per-sensor occupancy.

    Args:
        generate: () -> (B, G, ...) generator output for FIXED inputs (the same every call).
        offset: (G,) tensor the generator adds to its pre-tanh output of group g; set in place.
        target_occ: (G,) target occupancies (fractions).
        factor: grid_factor of the output layout; threshold_adu: the occupancy threshold.

    Returns:
        (G,) occupancies of the generator after calibration.
    """
    valid = valid_cells(factor).to(offset.device)
    lo_t, hi_t = torch.full_like(offset, lo), torch.full_like(offset, hi)
    occ = None
    for _ in range(iters):
        offset.copy_((lo_t + hi_t) / 2)
        x = generate()
        occ = level_fractions(x.reshape(x.shape[0], x.shape[1], -1), valid, (threshold_adu,))[..., 0].mean(0)  # (G,)
        too_many = occ > target_occ.to(occ.device)
        hi_t = torch.where(too_many, offset, hi_t)
        lo_t = torch.where(too_many, lo_t, offset)
    offset.copy_((lo_t + hi_t) / 2)
    x = generate()
    return level_fractions(x.reshape(x.shape[0], x.shape[1], -1), valid, (threshold_adu,))[..., 0].mean(0)


def init_event_offsets(cfg, G, digits: PxdDigits, latent_shape, events: int = 4) -> torch.Tensor | None:
    """``init_occupancy`` of an event generator ``G(z, noise)`` with a (40,) ``sensor_offset``
    parameter: calibrate it on ``events`` fixed draws to the per-sensor occupancy of ``digits``.
    Returns the calibrated occupancies (None when ``cfg.init_occupancy`` is off)."""
    if not cfg.init_occupancy:
        return None
    z, noise = _fixed_draws(G, latent_shape, events, 0, G.sensor_offset.device)
    target = torch.as_tensor(digits_level_fractions(digits, (cfg.threshold_adu,))[..., 0].mean(0), dtype=torch.float32)
    return calibrate_offsets(lambda: G(z, noise), G.sensor_offset.data, target, cfg.grid_factor, cfg.threshold_adu)


def _fixed_draws(G, latent_shape, events: int, seed: int, dev) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``events`` fixed latent + noise draws of generator ``G`` (torch generator seeded with ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(events, *latent_shape, generator=gen).to(dev)
    return z, [torch.randn(events, *s, generator=gen).to(dev) for s in G.noise_shapes()]


def _generated_occupancy(G, z, noise, valid: torch.Tensor, threshold_adu: int) -> torch.Tensor:
    """Fired fraction above ``threshold_adu`` per (event, sensor) of ``G(z, noise)``, shape (E, 40)."""
    x = G(z, noise)
    return level_fractions(x.reshape(x.shape[0], x.shape[1], -1), valid, (threshold_adu,))[..., 0]


def event_factor_loadings(occ: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` principal components of the event-to-event covariance of log sensor occupancy.

    Args:
        occ: (n_events, G) per-event occupancies (fractions), n_events >= 2.
        k: number of event factors.

    Returns:
        (G, k) float64 loadings ``L`` (eigenvectors scaled by the square root of their eigenvalue,
        largest first; each column's sign chosen so its sum is >= 0, i.e. u > 0 means "more
        background"): ``log occ ~ mean + L u`` with u ~ N(0, I_k) reproduces the leading part of the
        covariance, the part the sensors share through the event's beam conditions.
    """
    occ = np.asarray(occ, np.float64)
    l = np.log(occ + 1.0 / (N_UCELLS * N_VCELLS))  # one pixel: no log(0)
    w, v = np.linalg.eigh(np.cov(l.T).reshape(occ.shape[1], occ.shape[1]))
    w, v = w[::-1][:k].clip(min=0.0), v[:, ::-1][:, :k]
    lo = v * np.sqrt(w)
    return lo * np.where(lo.sum(0) < 0, -1.0, 1.0)


@torch.no_grad()
def init_event_factors(cfg, G, digits: PxdDigits, latent_shape, events: int = 4, delta: float = 0.1,
                       max_scale: float = 2.0) -> torch.Tensor | None:
    """``init_occupancy`` of the event factors of an event generator ``G(z, noise)`` with (40,)
    ``sensor_offset`` and (40, k) ``sensor_scale`` parameters (``cfg.event_factors`` = k > 0).

    The pre-tanh offset of sensor s in an event is ``sensor_offset[s] + sensor_scale[s] . u`` with
    u ~ N(0, I_k) shared by the event's 40 sensors. The data's loadings ``L`` (G, k)
    (:func:`event_factor_loadings`, in log occupancy) are converted to pre-tanh units by the
    generator's measured response ``d log occ_s / d offset_s`` (central difference +- ``delta`` on
    ``events`` fixed draws): ``sensor_scale = L / slope`` (clipped to +- ``max_scale``), so the
    untrained generator already has the data's leading occupancy correlations. Call after the
    offsets are calibrated. Returns the (40, k) scales set, or None when off.
    """
    k = int(getattr(cfg, "event_factors", 0))
    if not cfg.init_occupancy or k == 0 or digits.n_events < 2:
        return None
    occ = digits_level_fractions(digits, (cfg.threshold_adu,))[..., 0]  # (n, 40)
    loadings = torch.as_tensor(event_factor_loadings(occ, k), dtype=torch.float32)  # (40, k)
    dev = G.sensor_offset.device
    z, noise = _fixed_draws(G, latent_shape, events, 0, dev)
    valid = valid_cells(cfg.grid_factor).to(dev)
    scale, off = G.sensor_scale.data, G.sensor_offset.data
    scale.zero_()
    logs = []
    for d in (delta, -delta):
        off += d
        occ_g = _generated_occupancy(G, z, noise, valid, cfg.threshold_adu).mean(0)  # (40,)
        off -= d
        logs.append(torch.log(occ_g.cpu() + 1.0 / (N_UCELLS * N_VCELLS)))
    slope = ((logs[0] - logs[1]) / (2 * delta)).clamp(min=0.1)  # (40,) d log occ / d offset, > 0 (tanh is monotone)
    scale.copy_((loadings / slope[:, None]).clamp(-max_scale, max_scale).to(dev))
    return scale.clone()


@torch.no_grad()
def init_event_spread(cfg, G, digits: PxdDigits, latent_shape, events: int = 16, iters: int = 8) -> float | None:
    """``init_occupancy`` of an event generator's own per-sensor spread (``cfg.event_factors`` = k).

    The Pearson correlation of two sensors' occupancies is their shared covariance over the product
    of their total spreads. The event factors give the shared part (:func:`init_event_factors`);
    the rest of each sensor's event-to-event spread comes from the generator's latent input, and an
    untrained generator has far more of it than the data (measured on the small event GAN: per-sensor
    coefficient of variation 0.13 vs the data's 0.08, so the correlations came out at a third of
    the data's). This multiplies the weight of the generator's latent input layer
    (``G.latent_layer``: a Linear whose input is the random latent) by a factor alpha in (0, 1],
    found by bisection on ``events`` fixed draws with the event factors off, so that the mean over
    sensors of the variance of log occupancy matches the data's variance minus the part of the k
    leading principal components (the idiosyncratic spread); alpha = 1 if the generator has no more
    spread than that already. Call after the offsets are calibrated and before the factors (the
    offsets are re-calibrated by the caller). Returns alpha, or None when off.
    """
    k = int(getattr(cfg, "event_factors", 0))
    layer = getattr(G, "latent_layer", None)
    if not cfg.init_occupancy or not getattr(cfg, "init_spread", False) or layer is None or digits.n_events < 2:
        return None
    occ = digits_level_fractions(digits, (cfg.threshold_adu,))[..., 0]  # (n, 40)
    l = np.log(occ + 1.0 / (N_UCELLS * N_VCELLS))
    var = np.var(l, 0, ddof=1)  # (40,)
    if k:
        lo = event_factor_loadings(occ, k)
        var = np.maximum(var - (lo * lo).sum(1), 0.1 * var)
    target = float(var.mean())
    dev = G.sensor_offset.device
    z, noise = _fixed_draws(G, latent_shape, events, 1, dev)
    valid = valid_cells(cfg.grid_factor).to(dev)
    scale = getattr(G, "sensor_scale", None)
    saved = None if scale is None else scale.data.clone()
    if scale is not None:
        scale.data.zero_()
    w0 = layer.weight.data.clone()

    def spread(alpha: float) -> float:
        layer.weight.data.copy_(w0 * alpha)
        o = _generated_occupancy(G, z, noise, valid, cfg.threshold_adu)  # (E, 40)
        return float(torch.log(o + 1.0 / (N_UCELLS * N_VCELLS)).var(0).mean())

    alpha = 1.0
    if spread(1.0) > target:
        lo_a, hi_a = 0.0, 1.0
        for _ in range(iters):
            mid = 0.5 * (lo_a + hi_a)
            if spread(mid) > target:
                hi_a = mid
            else:
                lo_a = mid
        alpha = 0.5 * (lo_a + hi_a)
    layer.weight.data.copy_(w0 * alpha)
    if saved is not None:
        scale.data.copy_(saved)
    return alpha
