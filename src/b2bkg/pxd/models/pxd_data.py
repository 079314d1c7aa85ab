"""Data pipeline shared by the PXD image GANs (``pxd-wgan``, ``pxd-event-gan``, ``pxd-iea-gan``).

The training file stays sparse (``PxdDigits`` read from the contract file); dense image tensors are
built on the fly for each batch only (:mod:`b2bkg.pxd.images`), never for the whole dataset.

**Internal grid.** A sensor image is 250 x 768 pixels, rows padded to 256 (x = -1, i.e. 0 ADU).
A model may work on a coarser grid through the exact, invertible *space-to-depth* rearrangement
(pixel unshuffle) with block ``grid_factor = (fr, fc)``::

    (N, 1, 256, 768)  --space_to_depth-->  (N, fr*fc, 256/fr, 768/fc)
    channel  a*fc + b  of cell (i, j)  =  pixel (i*fr + a, j*fc + b)

and back with :func:`depth_to_space` (pixel shuffle). Unlike pooling, nothing is lost: the network
runs its convolutions on the coarse grid (``(8, 8)``: 32 x 96 cells of 64 channels, 64x fewer
positions) while still emitting every pixel, so the defined "upsampling" back to 250 x 768 is the
exact inverse rearrangement and ``generate`` always writes full-resolution digits.
``grid_factor = (1, 1)`` is the full-resolution image of the paper configs.

Values: ``x = 2 log(ADU+1)/log(256) - 1`` in [-1, 1] (:func:`b2bkg.pxd.images.from_adu`); the way back
(:func:`images_to_digits`) rounds, zero-suppresses below ``threshold_adu`` (7 ADU) and returns
sparse digits.

Example:
    >>> import torch
    >>> x = torch.randn(2, 1, 256, 768)
    >>> y = space_to_depth(x, (8, 8))
    >>> tuple(y.shape), bool((depth_to_space(y, (8, 8)) == x).all())
    ((2, 64, 32, 96), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits
from b2bkg.pxd.images import PAD_ROWS, crop_rows, dense_to_digits, digits_to_dense, digits_to_sensor_images, to_adu
from b2bkg.training.data import ArrayBatches, WrappedBatches
from b2bkg.training.registry import TrainConfig

__all__ = [
    "PxdImageGanConfig", "space_to_depth", "depth_to_space", "load_digits", "SensorImageBatches", "EventImageBatches",
    "images_to_digits", "event_images", "soft_zero_suppress", "validate_digits", "generator_device",
]


@dataclass(frozen=True)
class PxdImageGanConfig(TrainConfig):
    """Knobs every PXD image GAN shares (a family's config derives from this one).

    Attributes:
        grid_factor: (rows, cols) block of the space-to-depth internal grid; must divide 256 x 768
            ((1, 1) = full resolution, (8, 8) = 32 x 96 cells of 64 channels).
        threshold_adu: zero suppression of generated pixels, ADU (7: the published evaluation's cut).
        max_train_events: use only the first N events of the training file (0: all).
        lr: Adam learning rate of both networks (scaled by the trainer's schedule).
        beta1, beta2: Adam betas.
        out_bias_init: initial bias of the generator's output convolution (pre-tanh): < 0 starts
            the generator near "no hit" (x = tanh(-1) = -0.76 is below the 7-ADU threshold at
            x = -0.25) instead of 100 % occupancy.
        critic_sharpness: > 0: real and generated images reach the critic through the same soft
            zero suppression (:func:`soft_zero_suppress`), so the critic cannot tell them apart by the
            sub-threshold level of empty pixels (exactly -1 in data, never reached by tanh), which
            the output threshold discards anyway; 0: off (the paper).
        fm_occ, fm_cov, fm_charge: weights of the event-statistics matching terms added to the
            generator loss (:mod:`b2bkg.pxd.models.gan_stats`: per-sensor mean occupancy, covariance
            of the per-event log occupancies, charge survival function); 0: off (the papers).
        fm_levels_adu: charge levels of the matched survival function (first = ``threshold_adu``).
        fm_sharpness: slope (per unit of x) of the sigmoid whose derivative carries the gradient.
        fm_ema_decay: decay per generator step of the running generated statistics.
        init_occupancy: data-dependent initialisation (``Family.prepare``): the generator's learned
            pre-tanh output offset per sensor (one for all sensors in ``pxd-wgan``) is set by
            bisection so that the untrained generator already has the training file's occupancy
            per sensor (:func:`b2bkg.pxd.models.gan_stats.calibrate_offsets`).
        init_spread: with ``init_occupancy``, event generators (``pxd-event-gan``, ``pxd-iea-gan``)
            also scale their latent input layer so that each sensor's own event-to-event occupancy
            spread matches the data's part not explained by the event factors
            (:func:`b2bkg.pxd.models.gan_stats.init_event_spread`).
    """

    grid_factor: tuple[int, ...] = (1, 1)
    threshold_adu: int = 7
    max_train_events: int = 0
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    out_bias_init: float = 0.0
    critic_sharpness: float = 0.0
    fm_occ: float = 0.0
    fm_cov: float = 0.0
    fm_charge: float = 0.0
    fm_levels_adu: tuple[int, ...] = (7, 9, 12, 16, 22, 30, 42, 60, 100)
    fm_sharpness: float = 5.0
    fm_ema_decay: float = 0.95
    init_occupancy: bool = False
    init_spread: bool = False

    def __post_init__(self):
        super().__post_init__()
        if len(self.grid_factor) != 2 or min(self.grid_factor) < 1 or PAD_ROWS % self.grid_factor[0] or N_VCELLS % self.grid_factor[1]:
            raise ConfigError(f"grid_factor: {tuple(self.grid_factor)} must be two positive integers dividing ({PAD_ROWS}, {N_VCELLS})")
        check_range("threshold_adu", self.threshold_adu, 1, 255, "ADU")
        check_range("max_train_events", self.max_train_events, 0, None)
        check_range("lr", self.lr, 0.0, 1.0)
        check_range("beta1", self.beta1, 0.0, 1.0)
        check_range("beta2", self.beta2, 0.0, 1.0)
        check_range("out_bias_init", self.out_bias_init, -10.0, 10.0)
        check_range("critic_sharpness", self.critic_sharpness, 0.0, 1000.0)
        for name in ("fm_occ", "fm_cov", "fm_charge"):
            check_range(name, getattr(self, name), 0.0, None)
        check_range("fm_sharpness", self.fm_sharpness, 0.01, 1000.0)
        check_range("fm_ema_decay", self.fm_ema_decay, 0.0, 0.9999)
        lv = list(self.fm_levels_adu)
        if not lv or lv != sorted(set(lv)) or lv[0] != self.threshold_adu or lv[-1] > 255:
            raise ConfigError(f"fm_levels_adu: {lv} must be increasing ADU levels <= 255 starting at threshold_adu {self.threshold_adu}")

    @property
    def uses_stats(self) -> bool:
        """True if any event-statistics matching weight is > 0."""
        return max(self.fm_occ, self.fm_cov, self.fm_charge) > 0

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the internal grid: (256 / fr, 768 / fc)."""
        return PAD_ROWS // self.grid_factor[0], N_VCELLS // self.grid_factor[1]

    @property
    def cell_channels(self) -> int:
        """Channels of one sensor image on the internal grid: fr * fc."""
        return self.grid_factor[0] * self.grid_factor[1]


def soft_zero_suppress(x: torch.Tensor, threshold_adu: int, sharpness: float) -> torch.Tensor:
    """Differentiable zero suppression in x space: ``-1 + (x + 1) * sigmoid(sharpness * (x - x_thr))``.

    ``x_thr`` is the x value of ``threshold_adu - 0.5`` ADU (the rounding edge of :func:`to_adu`).
    Empty pixels (x = -1) stay exactly -1, pixels well below the threshold go to ~-1, hits well
    above it are kept; ``sharpness`` = 0 returns ``x`` unchanged. Any shape.
    """
    if sharpness <= 0:
        return x
    x_thr = 2.0 * float(np.log(threshold_adu + 0.5)) / float(np.log(256.0)) - 1.0
    return -1.0 + (x + 1.0) * torch.sigmoid(sharpness * (x - x_thr))


def space_to_depth(x: torch.Tensor, factor) -> torch.Tensor:
    """(N, 1, H, W) -> (N, fr*fc, H/fr, W/fc); channel ``a*fc + b`` of cell (i, j) is pixel (i*fr+a, j*fc+b)."""
    fr, fc = int(factor[0]), int(factor[1])
    n, c, h, w = x.shape
    if c != 1 or h % fr or w % fc:
        raise ValueError(f"space_to_depth: cannot split {tuple(x.shape)} into ({fr}, {fc}) blocks of one channel")
    if fr == fc == 1:
        return x
    y = x.reshape(n, h // fr, fr, w // fc, fc)  # (N, R, fr, C, fc)
    return y.permute(0, 2, 4, 1, 3).reshape(n, fr * fc, h // fr, w // fc)


def depth_to_space(y: torch.Tensor, factor) -> torch.Tensor:
    """Inverse of :func:`space_to_depth`: (N, fr*fc, R, C) -> (N, 1, R*fr, C*fc)."""
    fr, fc = int(factor[0]), int(factor[1])
    n, k, r, c = y.shape
    if k != fr * fc:
        raise ValueError(f"depth_to_space: {k} channels do not make ({fr}, {fc}) blocks")
    if fr == fc == 1:
        return y
    x = y.reshape(n, fr, fc, r, c).permute(0, 3, 1, 4, 2)  # (N, R, fr, C, fc)
    return x.reshape(n, 1, r * fr, c * fc)


def load_digits(path: str | Path, max_events: int = 0) -> PxdDigits:
    """Sparse PXD digits of a contract file (``.h5``/``.root``); the first ``max_events`` (0: all)."""
    from b2bkg.io import open_file

    with open_file(path) as f:
        if "pxd" not in f.groups:
            raise ConfigError(f"--data {path}: no 'pxd' group (has {sorted(f.groups)}); PXD image GANs train on PXD digits")
        n = f.n_events if max_events <= 0 else min(max_events, f.n_events)
        if n < 1:
            raise ConfigError(f"--data {path}: holds no events")
        return f.read_pxd(0, n)


def event_images(digits: PxdDigits, events, factor) -> torch.Tensor:
    """Images of whole events on the internal grid.

    Returns:
        float32 tensor (E, 40, fr*fc, 256/fr, 768/fc), values in [-1, 1].
    """
    x = digits_to_dense(digits, np.asarray(events, np.int64))  # (E, 40, 256, 768)
    e = x.shape[0]
    return space_to_depth(x.view(e * N_SENSORS, 1, *x.shape[-2:]), factor).view(e, N_SENSORS, -1, *_grid(factor))


def _grid(factor) -> tuple[int, int]:
    return PAD_ROWS // factor[0], N_VCELLS // factor[1]


class SensorImageBatches(WrappedBatches):
    """Batches of single-sensor images: rows are all (event, sensor) pairs of the file.

    ``next()`` -> ``{"x": (B, fr*fc, R, C) float32 in [-1, 1], "sensor": (B,) int64}``; shuffling,
    DDP sharding and the resumable position are :class:`~b2bkg.training.data.ArrayBatches`'.
    """

    def __init__(self, digits: PxdDigits, batch_size: int, seed: int, factor, rank: int = 0, world_size: int = 1):
        self.digits, self.factor = digits, tuple(factor)
        n = digits.n_events
        pairs = {"event": np.repeat(np.arange(n, dtype=np.int64), N_SENSORS), "sensor": np.tile(np.arange(N_SENSORS, dtype=np.int64), n)}
        self._b = ArrayBatches(pairs, batch_size, seed, rank, world_size, transform=self._densify)

    def _densify(self, batch: dict) -> dict:
        x = digits_to_sensor_images(self.digits, batch["event"].numpy(), batch["sensor"].numpy())  # (B, 1, 256, 768)
        return {"x": space_to_depth(x, self.factor), "sensor": batch["sensor"]}


class EventImageBatches(WrappedBatches):
    """Batches of whole events: ``next()`` -> (E, 40, fr*fc, R, C) float32 in [-1, 1]."""

    def __init__(self, digits: PxdDigits, events_per_batch: int, seed: int, factor, rank: int = 0, world_size: int = 1):
        self.digits, self.factor = digits, tuple(factor)
        self._b = ArrayBatches(np.arange(digits.n_events, dtype=np.int64), events_per_batch, seed, rank, world_size,
                               transform=lambda idx: event_images(self.digits, idx.numpy(), self.factor))


def images_to_digits(x: torch.Tensor, factor, threshold_adu: int = 7) -> PxdDigits:
    """Generated events on the internal grid -> full-resolution zero-suppressed digits.

    Args:
        x: (E, 40, fr*fc, R, C) generator output in [-1, 1] (or (E, 40, 1, 256, 768) at full resolution).
        factor: the ``grid_factor`` (fr, fc) the images were made on.
        threshold_adu: smallest charge kept, ADU.

    Returns:
        :class:`PxdDigits` of E events, every hit a 250 x 768 pixel with charge >= ``threshold_adu``.
    """
    e, s = x.shape[:2]
    if s != N_SENSORS:
        raise ValueError(f"images_to_digits: expected {N_SENSORS} sensors per event, got shape {tuple(x.shape)}")
    full = depth_to_space(x.reshape(e * s, *x.shape[2:]), factor)  # (E*40, 1, 256, 768)
    adu = to_adu(crop_rows(full), threshold_adu).view(e, s, N_UCELLS, N_VCELLS)
    return dense_to_digits(adu, threshold_adu)


def generator_device(modules) -> torch.device:
    return next(modules["generator"].parameters()).device


def validate_digits(generated: PxdDigits, truth: PxdDigits) -> dict[str, float]:
    """Quick validation numbers of a generated sample vs held-out truth (no bootstrap).

    ``score`` = |occupancy bias| + KS(cluster size) + KS(charge) + corr MAE: one number for
    best-checkpoint selection (lower is better); the parts are returned too.
    """
    from b2bkg.pxd.metrics import PxdSummary, compare

    d = compare(PxdSummary.from_digits(truth), PxdSummary.from_digits(generated), n_boot=0)
    out = {k: float(d[k]["value"]) for k in ("occupancy_bias", "ks_cluster_size", "ks_charge", "corr_mae", "w1_charge")}
    fin = [abs(out["occupancy_bias"]), out["ks_cluster_size"], out["ks_charge"], out["corr_mae"]]
    out = {"score": float(sum(v if np.isfinite(v) else 1.0 for v in fin)), **out}
    return out


def wgan_gp_step(state, batch, real_of, generate, extra=None) -> dict[str, float]:
    """One WGAN-GP trainer step shared by the image GANs: ``cfg.n_critic`` critic updates, then one
    generator update; the critic sees real and generated images through the same soft zero
    suppression (:func:`soft_zero_suppress`).

    Args:
        state: the trainer's state (``cfg`` with ``n_critic``, ``gp_lambda``, ``threshold_adu``,
            ``critic_sharpness``; modules ``generator`` and ``critic``).
        batch: the step's first batch; further critic updates take ``state.next_batch()``.
        real_of: batch -> real images tensor.
        generate: n -> n generated images (the family's latent draws), with gradients.
        extra: optional ``fake -> (loss tensor or None, {name: float})`` added to the generator loss
            (the event-statistics matching of :func:`b2bkg.pxd.models.gan_stats.stats_loss`), on the
            generator's raw output.
    """
    from b2bkg.nn.gan import gradient_penalty

    cfg, D = state.cfg, state.modules["critic"]

    def seen(x):
        return soft_zero_suppress(x, cfg.threshold_adu, cfg.critic_sharpness)

    for i in range(cfg.n_critic):
        real = seen(real_of(batch if i == 0 else state.next_batch()))
        with torch.no_grad():
            fake = seen(generate(len(real)))
        gp = gradient_penalty(D, real, fake)
        wdist = D(real).mean() - D(fake).mean()
        state.update("critic", -wdist + cfg.gp_lambda * gp)
    fake = generate(len(real_of(batch)))
    g_loss = -D(seen(fake)).mean()
    extra_loss, logged = extra(fake) if extra is not None else (None, {})
    state.update("generator", g_loss if extra_loss is None else g_loss + extra_loss)
    return {"wdist": wdist.item(), "gp": gp.item(), "g_loss": g_loss.item(), **logged}
