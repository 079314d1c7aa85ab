"""``pxd-diffusion``: a denoising diffusion model of PXD sensor images (seeds 000/001; issue 6, sections 2 and 4).

Forward process q(x_t | x_{t-1}) Gaussian with a beta schedule; learned reverse process with a
U-Net denoiser (:class:`DiffusionUNet`, epsilon or v prediction) that sees the diffusion step (sinusoidal
time embedding), the sensor (embeddings of layer, ladder, forward/backward half and the sensor
itself) and the event's background conditions (log of the file's ``conditions`` columns:
luminosity, currents, vacuum scales; the injection flag as is), with optional classifier-free
dropout of the conditions. Schedules and samplers (DDPM, few-step deterministic DDIM) live apart in
:mod:`b2bkg.pxd.diffusion_schedulers` and take the network as an argument. Each of the 40 sensors of
an event is one image; sensors are tied together by the shared conditions (the common cause of
the sensor-occupancy correlations in the truth).

Two representations, chosen by ``grid_factor`` (fr, fc):

* ``(1, 1)`` **pixel mode** (``paper`` preset, GPU): the image is the full sensor, 250 x 768 padded to
  256 x 768, values ``x = 2 log(ADU+1)/log(256) - 1`` (:func:`b2bkg.pxd.images.from_adu`); the
  sampled x0 goes back with :func:`~b2bkg.pxd.images.to_adu` (rounding, 7-ADU zero suppression).
* ``(fr, fc) > 1`` **coarse mode** (``small`` preset, CPU): the image is the *fired-pixel count map*
  on a grid of fr x fc pixel cells (``small``: 16 x 16 -> 16 x 48 cells; 8 x 8 -> 32 x 96; rows padded to 256), values
  ``x = 2 log(1 + n) / log(1 + fr*fc) - 1`` (n = fired pixels in the cell, -1 = empty). The
  diffusion model generates this map; a defined stochastic **decoder** (:func:`decode_count_maps`)
  turns it into full-resolution 250 x 768 digits:

  1. counts: ``n = expm1((x + 1)/2 log(1 + fr*fc))`` per cell, stochastically rounded
     (``floor(n + U)``, unbiased) and clipped to the cell's real pixels (in the last cell row only the
     rows below 250 are real: 10 of 16 for 16 x 16 cells);
  2. clusters: the fired pixels of a layer, taken as one stream (cells in sensor, u, v order), are
     cut into clusters whose sizes are drawn from that layer's learned cluster-size spectrum; a
     cluster belongs to the cell of its first pixel and may take the budget of the next non-empty
     cells of the stream (so the size spectrum is kept; clusters are cut only at sensor changes).
     Each cluster starts at a uniform pixel of its cell. Clusters of up to ``SHAPE_MAX_SIZE``
     pixels (all but ~0.1 % of them) draw their (u-extent, v-extent) box from the layer's learned
     joint P(u-extent, v-extent | size) and the orientation of their u-v correlation from its
     learned frequency, and fill the box with pxd-fast's pattern builder (a digital line joining
     opposite corners plus the cells nearest to it, :func:`~b2bkg.pxd.models.cluster_model.build_patterns`);
     larger ones are compact boxes: v-extent from the learned P(v-extent | size), pixels filling the
     box row by row (u rows = ceil(size / v-extent)), with one random direction per cluster and axis;
  The decoder's spectra (``size_hist``, ``vext_hist``, ``box_hist``, ``flip_frac``, ``charge_hist`` per layer) are buffers of the
  ``decoder`` module, fitted from the training file (clusters of ``decoder_fit_events`` events,
  charges of all), so the whole model is learned from data in the contract schema. Occupancy and
  its position structure come from the diffusion model, the charge spectrum exactly from data (up
  to overlaps), the cluster extents from data, the pixel patterns inside the box only approximately
  (line-like: no L shapes or gaps; stream-order spill-over moves part of a cell's budget to the next
  non-empty cell); pixel charges are drawn independently of the cluster.

Training: one (event, sensor) image per row, loss = MSE between the denoiser output and the
target (noise or v) at a uniform random step. Generation (``b2bkg generate``) uses the EMA weights
and the sampler of the config (``sampler``: ``ddim`` with ``sampler_steps`` steps, or ``ddpm``
through all ``num_train_timesteps``); the starting noise of event ``i`` comes from its own stream,
so output depends only on (seed, event) (same device, threads and batch size).

Example:
    $ b2bkg train pxd-diffusion --data train.h5 --val val.h5 --out runs/diff --config small
    $ b2bkg generate --model runs/diff --events 100 --seed 2 --out gen.h5 --conditions test.h5
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from b2bkg.core.conditions import CONDITION_NAMES
from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError, SchemaError
from b2bkg.core.seeding import event_rng
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, Conditions, PxdDigits
from b2bkg.pxd.diffusion_schedulers import BETA_SCHEDULES, PREDICTION_TYPES, NoiseSchedule, ddim_sample, ddpm_sample
from b2bkg.pxd.images import PAD_ROWS, crop_rows, dense_to_digits, digits_to_sensor_images, to_adu
from b2bkg.pxd.sample import assemble_digits

from .cluster_model import build_patterns
from b2bkg.training.data import ArrayBatches, WrappedBatches
from b2bkg.training.registry import Family, TrainConfig, register
from b2bkg.training.sampling import event_generators, event_normal

__all__ = [
    "PxdDiffusionConfig", "DiffusionUNet", "CountDecoder", "PxdDiffusion", "condition_features", "sensor_layer",
    "count_maps", "counts_to_x", "x_to_counts", "decode_count_maps", "fit_decoder_stats", "NOMINAL_CONDITIONS",
]

NOMINAL_CONDITIONS = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0], np.float32)
"""Conditions used when none are given (order of ``CONDITION_NAMES``)."""
N_COND = len(CONDITION_NAMES)
MAX_CLUSTER_SIZE = 64
#: clusters up to this size take their (u, v) box from the learned joint extent table (``box_hist``)
SHAPE_MAX_SIZE = 16
#: random jitter (pixels) of the extra cells' distance to the cluster line (as pxd-fast's default)
SHAPE_JITTER = 0.35
#: the fitted spectra of the coarse-mode decoder (buffers of :class:`CountDecoder`)
DECODER_STATS = ("size_hist", "vext_hist", "box_hist", "flip_frac", "charge_hist")
DECODE_DOMAIN = "pxd-diffusion.decode"
DDPM_DOMAIN = "pxd-diffusion.ddpm"
# ladders per layer (REFERENCE.md): layer 1: 8 x 2 sensors, layer 2: 12 x 2
_LADDER = np.concatenate([np.repeat(np.arange(8), 2), 8 + np.repeat(np.arange(12), 2)])
_HALF = np.tile([0, 1], N_SENSORS // 2)


@dataclass(frozen=True)
class PxdDiffusionConfig(TrainConfig):
    """``pxd-diffusion`` knobs (module docstring for the representation).

    Attributes:
        grid_factor: (rows, cols) pixel cell of the image: (1, 1) = full-resolution log-ADU image
            (256 x 768); larger = fired-pixel count map on (256/fr) x (768/fc) cells + the decoder.
        base_channels: U-Net channels at the top resolution.
        channel_mults: channel multiplier per resolution level (one 2x downsampling between levels).
        res_blocks: residual blocks per level (encoder; the decoder has one more, as in DDPM).
        emb_dim: width of the time/sensor/condition embedding.
        num_train_timesteps, beta_schedule, beta_start, beta_end, prediction_type: forward process
            (:class:`b2bkg.pxd.diffusion_schedulers.NoiseSchedule`).
        sampler: ``ddim`` (deterministic, ``sampler_steps`` steps) or ``ddpm`` (all T steps).
        sampler_steps: DDIM denoiser evaluations.
        clip_x0: clip the x0 estimate of each sampler step to [-clip_x0, clip_x0] (0: off).
        conditioned: use the event's beam conditions (a training file without a conditions group is
            taken at nominal conditions).
        cond_dropout: classifier-free training: probability to drop an image's conditions.
        guidance_scale: classifier-free guidance at sampling (1: plain conditional model, no extra cost).
        threshold_adu: zero suppression of generated pixels (pixel mode), ADU.
        max_train_events: use only the first N training events (0: all).
        decoder_fit_events: events clustered to fit the decoder's cluster spectra (coarse mode).
        lr, beta1, beta2, weight_decay: AdamW.
    """

    grid_factor: tuple[int, ...] = (16, 16)
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 4)
    res_blocks: int = 1
    emb_dim: int = 64
    num_train_timesteps: int = 1000
    beta_schedule: str = "cosine"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "v"
    sampler: str = "ddim"
    sampler_steps: int = 25
    clip_x0: float = 1.0
    conditioned: bool = True
    cond_dropout: float = 0.0
    guidance_scale: float = 1.0
    threshold_adu: int = 7
    max_train_events: int = 0
    decoder_fit_events: int = 50
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        gf = tuple(self.grid_factor)
        if len(gf) != 2 or min(gf) < 1 or PAD_ROWS % gf[0] or N_VCELLS % gf[1] or gf[0] * gf[1] > 1024:
            raise ConfigError(f"grid_factor: {gf} must be two positive integers dividing ({PAD_ROWS}, {N_VCELLS}) with at most 1024 pixels per cell")
        check_range("base_channels", self.base_channels, 4, 1024)
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ConfigError(f"channel_mults: {tuple(self.channel_mults)} must be a non-empty list of integers >= 1")
        levels = len(self.channel_mults) - 1
        r, c = self.grid
        if r % (2**levels) or c % (2**levels):
            raise ConfigError(f"channel_mults: {len(self.channel_mults)} levels need the grid {r} x {c} divisible by {2**levels}")
        if any((self.base_channels * m) % min(8, self.base_channels * m) for m in self.channel_mults):
            raise ConfigError(f"base_channels: {self.base_channels} x {tuple(self.channel_mults)} must be divisible by 8 (GroupNorm)")
        check_range("res_blocks", self.res_blocks, 1, 8)
        check_range("emb_dim", self.emb_dim, 8, 4096)
        check_range("num_train_timesteps", self.num_train_timesteps, 2, 100000)
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ConfigError(f"beta_schedule: {self.beta_schedule!r} is not one of {', '.join(BETA_SCHEDULES)}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"prediction_type: {self.prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
        if self.sampler not in ("ddim", "ddpm"):
            raise ConfigError(f"sampler: {self.sampler!r} is not one of ddim, ddpm")
        check_range("sampler_steps", self.sampler_steps, 1, self.num_train_timesteps)
        check_range("clip_x0", self.clip_x0, 0.0, 100.0)
        check_range("cond_dropout", self.cond_dropout, 0.0, 1.0)
        check_range("guidance_scale", self.guidance_scale, 0.0, 20.0)
        if self.guidance_scale != 1.0 and self.cond_dropout == 0.0:
            raise ConfigError(f"guidance_scale: {self.guidance_scale} needs cond_dropout > 0 (an unconditional model to guide from)")
        check_range("threshold_adu", self.threshold_adu, 1, 255, "ADU")
        check_range("max_train_events", self.max_train_events, 0, None)
        check_range("decoder_fit_events", self.decoder_fit_events, 1, None)
        check_range("lr", self.lr, 0.0, 1.0)
        check_range("beta1", self.beta1, 0.0, 1.0)
        check_range("beta2", self.beta2, 0.0, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the image: (256 / fr, 768 / fc)."""
        return PAD_ROWS // self.grid_factor[0], N_VCELLS // self.grid_factor[1]

    @property
    def pixel_mode(self) -> bool:
        return tuple(self.grid_factor) == (1, 1)

    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule(self.num_train_timesteps, self.beta_schedule, self.beta_start, self.beta_end, self.prediction_type)


# ----------------------------------------------------------------------------------------------
# conditions, sensors
# ----------------------------------------------------------------------------------------------
def condition_features(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Network input from beam conditions.

    Args:
        values: (N, 6) conditions in the order of ``CONDITION_NAMES`` (scale factors vs nominal; injection 0/1).
    Returns:
        float32 tensor (N, 6): log of the five scales (clamped at 1e-3), the injection flag as is.
    """
    v = torch.as_tensor(np.asarray(values, np.float32)).reshape(-1, N_COND)
    return torch.cat([torch.log(v[:, :5].clamp(min=1e-3)), v[:, 5:]], 1)


def sensor_layer(sensor: np.ndarray) -> np.ndarray:
    """Layer index 0 (inner, sensors 0..15) or 1 (outer, 16..39) of each sensor index."""
    return (np.asarray(sensor) >= 16).astype(np.int64)


def _ordered_conditions(cond: Conditions | None, n: int, origin: str) -> np.ndarray:
    """(n, 6) float32 in ``CONDITION_NAMES`` order (nominal if ``cond`` is None)."""
    if cond is None:
        return np.tile(NOMINAL_CONDITIONS, (n, 1))
    missing = [c for c in CONDITION_NAMES if c not in cond.names]
    if missing:
        raise SchemaError(origin, "conditions", f"missing column(s) {missing} (have {list(cond.names)})")
    idx = [cond.names.index(c) for c in CONDITION_NAMES]
    return np.asarray(cond.values, np.float32)[:, idx]


# ----------------------------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of step indices t (N,) -> (N, dim) float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    a = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(a), torch.sin(a)], 1)
    return F.pad(emb, (0, dim % 2))


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + embedding (scale and shift), GroupNorm-SiLU-conv, residual. (N, cin, H, W) -> (N, cout, H, W)."""

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, 1)
        h = self.n2(h) * (1 + scale) + shift
        return self.skip(x) + self.c2(F.silu(h))


class DiffusionUNet(nn.Module):
    """U-Net denoiser of one sensor image (forward only).

    Args:
        in_channels: image channels (1).
        grid: (H, W) of the image (fixed: two coordinate channels of that size are appended).
        base_channels, channel_mults, res_blocks, emb_dim: see :class:`PxdDiffusionConfig`.

    ``forward(x, t, sensor, cond, cond_mask=None)``:
        x: noisy image, (N, C, H, W) float32; t: step indices (N,) int64; sensor: (N,) int64 0..39;
        cond: (N, 6) float32 :func:`condition_features`; cond_mask: (N,) float 1 = use the
        conditions, 0 = dropped (classifier-free), None = all used.
        Returns the prediction (noise or v), (N, C, H, W) float32.

    Example:
        >>> net = DiffusionUNet(1, (32, 96), 8, (1, 2), 1, 16)
        >>> y = net(torch.zeros(2, 1, 32, 96), torch.tensor([0, 5]), torch.tensor([0, 39]), torch.zeros(2, 6))
        >>> tuple(y.shape)
        (2, 1, 32, 96)
    """

    def __init__(self, in_channels: int, grid: tuple[int, int], base_channels: int = 16, channel_mults=(1, 2, 4),
                 res_blocks: int = 1, emb_dim: int = 64):
        super().__init__()
        self.emb_dim = emb_dim
        self.time = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.sensor_emb = nn.Embedding(N_SENSORS, emb_dim)
        self.layer_emb = nn.Embedding(2, emb_dim)
        self.ladder_emb = nn.Embedding(20, emb_dim)
        self.half_emb = nn.Embedding(2, emb_dim)
        self.cond = nn.Sequential(nn.Linear(N_COND, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.register_buffer("ladder_of", torch.as_tensor(_LADDER, dtype=torch.int64), persistent=False)
        self.register_buffer("half_of", torch.as_tensor(_HALF, dtype=torch.int64), persistent=False)
        H, W = grid
        u = torch.linspace(-1, 1, H).view(H, 1).expand(H, W)
        v = torch.linspace(-1, 1, W).view(1, W).expand(H, W)
        self.register_buffer("coords", torch.stack([u, v])[None].clone(), persistent=False)  # (1, 2, H, W)

        chs = [base_channels * m for m in channel_mults]
        self.inp = nn.Conv2d(in_channels + 2, chs[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, c = [chs[0]], chs[0]
        for i, ch in enumerate(chs):
            blocks = nn.ModuleList()
            for _ in range(res_blocks):
                blocks.append(ResBlock(c, ch, emb_dim))
                c = ch
                skips.append(c)
            self.down.append(blocks)
            if i < len(chs) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim), ResBlock(c, c, emb_dim)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chs))):
            blocks = nn.ModuleList()
            for _ in range(res_blocks + 1):
                blocks.append(ResBlock(c + skips.pop(), ch, emb_dim))
                c = ch
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.out_norm = _norm(c)
        self.out = nn.Conv2d(c, in_channels, 3, padding=1)

    def embedding(self, t, sensor, cond, cond_mask=None) -> torch.Tensor:
        """(N, emb_dim) embedding of step, sensor (layer, ladder, half, sensor) and conditions."""
        e = self.time(timestep_embedding(t, self.emb_dim))
        e = e + self.sensor_emb(sensor) + self.layer_emb((sensor >= 16).long()) + self.ladder_emb(self.ladder_of[sensor]) + self.half_emb(self.half_of[sensor])
        c = self.cond(cond)
        if cond_mask is not None:
            c = c * cond_mask.to(c.dtype)[:, None]
        return e + c

    def forward(self, x, t, sensor, cond, cond_mask=None):
        emb = self.embedding(t, sensor, cond, cond_mask)
        h = self.inp(torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1).to(x.dtype)], 1))
        hs = [h]
        for i, blocks in enumerate(self.down):
            for b in blocks:
                h = b(h, emb)
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)
        for b in self.mid:
            h = b(h, emb)
        for i, blocks in enumerate(self.up):
            for b in blocks:
                h = b(torch.cat([h, hs.pop()], 1), emb)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))


class CountDecoder(nn.Module):
    """Buffers of the coarse-mode decoder (fitted from data, no parameters).

    ``size_hist`` (2, 65) float64: cluster-size histogram per layer (sizes 0..64, 64 = overflow);
    ``vext_hist`` (2, 65, 65) float64: joint histogram of (size, v-extent) per layer;
    ``box_hist`` (2, 17, 256) float64: joint histogram of (size, (u-extent - 1) * 16 + v-extent - 1)
    per layer, sizes up to ``SHAPE_MAX_SIZE``;
    ``flip_frac`` (2, 17) float64: fraction of clusters per (layer, size) whose pixels' u and v are
    negatively correlated (the anti-diagonal orientation);
    ``charge_hist`` (2, 256) float64: fired-pixel charge histogram per layer, ADU.
    Run folders written before the shape tables existed load with empty ``box_hist`` / ``flip_frac``
    (every cluster then a box).
    """

    def __init__(self):
        super().__init__()
        S = SHAPE_MAX_SIZE
        self.register_buffer("size_hist", torch.zeros(2, MAX_CLUSTER_SIZE + 1, dtype=torch.float64))
        self.register_buffer("vext_hist", torch.zeros(2, MAX_CLUSTER_SIZE + 1, MAX_CLUSTER_SIZE + 1, dtype=torch.float64))
        self.register_buffer("box_hist", torch.zeros(2, S + 1, S * S, dtype=torch.float64))
        self.register_buffer("flip_frac", torch.zeros(2, S + 1, dtype=torch.float64))
        self.register_buffer("charge_hist", torch.zeros(2, 256, dtype=torch.float64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for k in ("box_hist", "flip_frac"):  # older run folders: no shape tables
            if prefix + k not in state_dict:
                state_dict[prefix + k] = torch.zeros_like(getattr(self, k))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, *_):  # pragma: no cover - buffers only
        raise NotImplementedError("CountDecoder holds spectra; decode with decode_count_maps()")

    @property
    def fitted(self) -> bool:
        return bool(self.charge_hist.sum() > 0)


# ----------------------------------------------------------------------------------------------
# data: count maps and the decoder
# ----------------------------------------------------------------------------------------------
def count_maps(digits: PxdDigits, factor) -> np.ndarray:
    """Fired pixels per cell of every (event, sensor), vectorized.

    Returns:
        int16 array (n_events, 40, 256/fr, 768/fc): fired pixels per fr x fc cell.
    """
    fr, fc = int(factor[0]), int(factor[1])
    R, C = PAD_ROWS // fr, N_VCELLS // fc
    ev = digits.event_index().astype(np.int64)
    key = ((ev * N_SENSORS + digits.sensor.astype(np.int64)) * R + digits.ucell.astype(np.int64) // fr) * C + digits.vcell.astype(np.int64) // fc
    n = np.bincount(key, minlength=digits.n_events * N_SENSORS * R * C)
    return n.astype(np.int16).reshape(digits.n_events, N_SENSORS, R, C)


def counts_to_x(n: torch.Tensor, cell_pixels: int) -> torch.Tensor:
    """Count map -> image values in [-1, 1]: ``2 log(1 + n)/log(1 + cell_pixels) - 1`` (any shape)."""
    return 2.0 * torch.log1p(n.float()) / math.log1p(cell_pixels) - 1.0


def x_to_counts(x: torch.Tensor, cell_pixels: int) -> torch.Tensor:
    """Inverse of :func:`counts_to_x` (continuous counts >= 0; x clipped to [-1, 1])."""
    return torch.expm1((x.float().clamp(-1, 1) + 1.0) * (0.5 * math.log1p(cell_pixels)))


def fit_decoder_stats(digits: PxdDigits) -> dict[str, np.ndarray]:
    """Decoder spectra from truth digits, per layer: ``size_hist`` (2, 65), ``vext_hist`` (2, 65, 65),
    ``box_hist`` (2, 17, 256), ``flip_frac`` (2, 17), ``charge_hist`` (2, 256) (see :class:`CountDecoder`).

    Charges from every hit; cluster sizes, the joint (size, v-extent) histogram (capped at 64), the
    joint (size, u-extent, v-extent) histogram and the orientation of clusters up to
    ``SHAPE_MAX_SIZE`` from the 8-connected clusters (:func:`b2bkg.pxd.clusters.find_clusters`).
    """
    from b2bkg.pxd.clusters import find_clusters

    layer = sensor_layer(digits.sensor)
    charge_hist = np.stack([np.bincount(digits.charge[layer == k], minlength=256)[:256] for k in (0, 1)]).astype(np.float64)
    cl = find_clusters(digits)
    cl_layer = sensor_layer(cl.sensor)
    M = MAX_CLUSTER_SIZE + 1
    size = np.minimum(cl.size, MAX_CLUSTER_SIZE).astype(np.int64)
    vext = np.minimum(cl.v_extent, size).astype(np.int64)
    size_hist = np.stack([np.bincount(size[cl_layer == k], minlength=M) for k in (0, 1)]).astype(np.float64)
    vext_hist = np.stack([np.bincount(size[cl_layer == k] * M + vext[cl_layer == k], minlength=M * M).reshape(M, M)
                          for k in (0, 1)]).astype(np.float64)
    # (u-extent, v-extent) box and u-v orientation of the small clusters
    S = SHAPE_MAX_SIZE
    small = (cl.size <= S) & (cl.u_extent <= S) & (cl.v_extent <= S)
    box_key = (cl_layer * (S + 1) + cl.size) * (S * S) + (cl.u_extent - 1) * S + (cl.v_extent - 1)
    box_hist = np.bincount(box_key[small], minlength=2 * (S + 1) * S * S).reshape(2, S + 1, S * S).astype(np.float64)
    hc = cl.hit_cluster
    u, v = digits.ucell.astype(np.float64), digits.vcell.astype(np.float64)
    n_c = len(cl.size)
    su, sv = np.bincount(hc, u, n_c), np.bincount(hc, v, n_c)
    cov = np.bincount(hc, u * v, n_c) - su * sv / np.maximum(cl.size, 1)  # (n,) sum of (u - mean)(v - mean)
    neg = small & (cov < -1e-9)
    lk = cl_layer * (S + 1) + np.minimum(cl.size, S)
    tot = np.bincount(lk[small], minlength=2 * (S + 1))
    flip_frac = (np.bincount(lk[neg], minlength=2 * (S + 1)) / np.maximum(tot, 1)).reshape(2, S + 1)
    return {"size_hist": size_hist, "vext_hist": vext_hist, "box_hist": box_hist, "flip_frac": flip_frac, "charge_hist": charge_hist}


def _inverse_cdf(hist: np.ndarray, u: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(hist)
    return np.minimum(np.searchsorted(cdf / cdf[-1], u, side="right"), len(hist) - 1)


def _rows_inverse_cdf(table: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Column drawn from row ``rows[i]`` of ``table`` (R, K) for each uniform ``u[i]``; an empty row -> its
    diagonal (v-extent = size: a straight line) capped at K-1. Vectorized: one searchsorted."""
    R, K = table.shape
    tot = table.sum(1, keepdims=True)
    pdf = np.where(tot > 0, table / np.where(tot > 0, tot, 1), 0.0)
    empty = tot[:, 0] <= 0
    pdf[empty, np.minimum(np.arange(R), K - 1)[empty]] = 1.0
    cdf = np.cumsum(pdf, 1)
    cdf[:, -1] = 1.0
    flat = (cdf + np.arange(R)[:, None]).ravel()  # strictly increasing over rows
    j = np.searchsorted(flat, rows + np.minimum(u, 1 - 1e-12), side="right")
    return np.minimum(j - rows * K, K - 1)


def decode_count_maps(counts: np.ndarray, factor, stats: dict[str, np.ndarray], rng: np.random.Generator,
                      threshold_adu: int = 7) -> dict[str, np.ndarray]:
    """One event's continuous count maps -> full-resolution digits (module docstring, steps 1-3).

    Args:
        counts: (40, 256/fr, 768/fc) float, fired pixels per cell (continuous, >= 0).
        factor: the cell (fr, fc) in pixels.
        stats: :func:`fit_decoder_stats` output (numpy arrays).
        rng: the event's generator (all draws of the decoder come from it).
        threshold_adu: zero suppression after charges of overlapping pixels add, ADU.
    Returns:
        one event's ``sensor``, ``ucell``, ``vcell``, ``charge`` arrays (uint8/uint16/uint16/uint8).
    """
    fr, fc = int(factor[0]), int(factor[1])
    S, R, C = counts.shape
    # 1. stochastic rounding, clipped to the real pixels of each cell
    real_rows = np.clip(N_UCELLS - np.arange(R) * fr, 0, fr)  # (R,)
    cap = (real_rows * fc)[None, :, None]
    n = np.minimum(np.floor(counts + rng.random(counts.shape)).astype(np.int64), cap)  # (S, R, C)
    cells = np.flatnonzero(n)  # flat (s, r, c) of non-empty cells, sensor-major, then u, then v
    m = n.reshape(-1)[cells]
    out_s, out_u, out_v, out_q = [], [], [], []
    cell_layer = sensor_layer(cells // (R * C))
    for k in (0, 1):
        sel = cells[cell_layer == k]
        mk = m[cell_layer == k]
        total = int(mk.sum())
        if total == 0:
            continue
        # 2. cluster sizes along the layer's pixel stream (cells in sensor, u, v order); a cluster
        # belongs to the cell of its first pixel and may take pixels of the next cells of the stream
        # (so the size spectrum is kept; only clusters reaching another sensor are cut)
        sizes_pdf = stats["size_hist"][k].copy()
        sizes_pdf[0] = 0.0
        if sizes_pdf.sum() <= 0:
            sizes_pdf[1] = 1.0
        mean_size = float((sizes_pdf * np.arange(len(sizes_pdf))).sum() / sizes_pdf.sum())
        n_draw = int(total / mean_size * 1.2) + 16
        sizes = _inverse_cdf(sizes_pdf, rng.random(n_draw))
        while sizes.sum() < total:
            sizes = np.concatenate([sizes, _inverse_cdf(sizes_pdf, rng.random(n_draw))])
        ends = np.cumsum(sizes)  # cluster j covers stream positions ends[j-1] .. ends[j]-1
        pos = np.arange(total)
        clus = np.searchsorted(ends, pos, side="right")
        cell_of = np.repeat(np.arange(len(sel)), mk)  # cell (position in sel) of each stream pixel
        sens_of = sel[cell_of] // (R * C)
        new = np.ones(total, bool)
        new[1:] = (clus[1:] != clus[:-1]) | (sens_of[1:] != sens_of[:-1])
        cid = np.cumsum(new) - 1
        first = np.flatnonzero(new)
        rank = pos - first[cid]  # position of the pixel in its cluster
        size = np.bincount(cid)  # actual cluster sizes (after cuts)
        n_cl = len(first)
        s_idx, rem = np.divmod(sel[cell_of[first]], R * C)
        r_idx, c_idx = np.divmod(rem, C)
        u0 = r_idx * fr + (rng.random(n_cl) * real_rows[r_idx]).astype(np.int64)
        v0 = c_idx * fc + (rng.random(n_cl) * fc).astype(np.int64)
        # compact shape: v-extent from the layer's learned P(v-extent | size); pixels fill a box of
        # that many columns row by row (u rows = ceil(size / v-extent)); one direction per cluster and axis
        vext = np.maximum(_rows_inverse_cdf(stats["vext_hist"][k], np.minimum(size, MAX_CLUSTER_SIZE), rng.random(n_cl)), 1)
        vext = np.minimum(vext, size)
        su = np.where(rng.random(n_cl) < 0.5, -1, 1)
        sv = np.where(rng.random(n_cl) < 0.5, -1, 1)
        u = u0[cid] + su[cid] * (rank // vext[cid])
        v = v0[cid] + sv[cid] * (rank % vext[cid])
        box = stats.get("box_hist")
        if box is not None and box.size:
            # small clusters: learned (u-extent, v-extent) box and orientation, pxd-fast's pattern builder
            S = SHAPE_MAX_SIZE
            bh = box[k]  # (S + 1, S * S)
            sm = np.flatnonzero((size <= S) & (bh[np.minimum(size, S)].sum(1) > 0))
            if len(sm):
                wh = _rows_inverse_cdf(bh, size[sm], rng.random(len(sm)))
                w, h = wh // S + 1, wh % S + 1
                flip = rng.random(len(sm)) < stats["flip_frac"][k][size[sm]]
                ci, du, dv = build_patterns(size[sm].astype(np.int64), w, h, flip, rng, SHAPE_JITTER)
                pix = np.flatnonzero(np.isin(cid, sm))  # stream pixels of those clusters, grouped by cluster like (ci, du, dv)
                u[pix] = u0[sm][ci] + du
                v[pix] = v0[sm][ci] + dv
        # 3. charges from the layer's spectrum
        q = _inverse_cdf(stats["charge_hist"][k], rng.random(total))
        out_s.append(s_idx[cid])
        out_u.append(u)
        out_v.append(v)
        out_q.append(q)
    if not out_s:
        z = np.zeros(0, np.int64)
        return assemble_digits(z, z, z, z, threshold_adu)
    return assemble_digits(np.concatenate(out_s), np.concatenate(out_u), np.concatenate(out_v), np.concatenate(out_q), threshold_adu)


# ----------------------------------------------------------------------------------------------
# training data
# ----------------------------------------------------------------------------------------------
def _read_training(path, cfg: PxdDiffusionConfig) -> tuple[PxdDigits, np.ndarray]:
    from b2bkg.io import open_file

    with open_file(path) as f:
        if "pxd" not in f.groups:
            raise SchemaError(str(path), "pxd", f"pxd-diffusion trains on PXD digits (file has: {', '.join(f.groups) or 'none'})")
        n = f.n_events if cfg.max_train_events <= 0 else min(cfg.max_train_events, f.n_events)
        if n < 1:
            raise ConfigError(f"--data {path}: holds no events")
        digits = f.read_pxd(0, n)
        cond = f.read_conditions(0, n)
    # a file without a conditions group (e.g. real data without a run database) trains at nominal conditions
    values = _ordered_conditions(cond, n, str(path)) if cfg.conditioned else np.tile(NOMINAL_CONDITIONS, (n, 1))
    return digits, values


class DiffusionBatches(WrappedBatches):
    """Training batches of single-sensor images: ``next()`` -> dict with

    ``x`` (B, 1, H, W) float32 in [-1, 1]; ``sensor`` (B,) int64; ``cond`` (B, 6) float32
    (:func:`condition_features`); in coarse mode also the decoder spectra ``size_hist`` (2, 65),
    ``vext_hist`` (2, 65, 65), ``box_hist`` (2, 17, 256), ``flip_frac`` (2, 17), ``charge_hist`` (2, 256)
    (float64, the same every batch; ``step`` copies them
    into the ``decoder`` buffers). Shuffling, sharding and resume are ArrayBatches'.
    """

    def __init__(self, cfg: PxdDiffusionConfig, path, seed: int, rank: int = 0, world_size: int = 1):
        self.cfg = cfg
        self.digits, cond = _read_training(path, cfg)
        self.cond = condition_features(cond)  # (n_events, 6)
        n = self.digits.n_events
        self.stats = None
        if not cfg.pixel_mode:
            self.counts = torch.from_numpy(count_maps(self.digits, cfg.grid_factor))  # (n, 40, R, C) int16
            fit = self.digits.slice(0, min(cfg.decoder_fit_events, n))
            st = fit_decoder_stats(fit)
            st["charge_hist"] = np.stack([np.bincount(self.digits.charge[sensor_layer(self.digits.sensor) == k], minlength=256)[:256]
                                          for k in (0, 1)]).astype(np.float64)
            self.stats = {k: torch.as_tensor(v) for k, v in st.items()}
        pairs = {"event": np.repeat(np.arange(n, dtype=np.int64), N_SENSORS), "sensor": np.tile(np.arange(N_SENSORS, dtype=np.int64), n)}
        self._b = ArrayBatches(pairs, cfg.batch_size, seed, rank, world_size, transform=self._densify)

    def _densify(self, batch: dict) -> dict:
        ev, se = batch["event"], batch["sensor"]
        cfg = self.cfg
        if cfg.pixel_mode:
            x = digits_to_sensor_images(self.digits, ev.numpy(), se.numpy())  # (B, 1, 256, 768)
        else:
            x = counts_to_x(self.counts[ev, se].unsqueeze(1), cfg.grid_factor[0] * cfg.grid_factor[1])  # (B, 1, R, C)
        out = {"x": x, "sensor": se, "cond": self.cond[ev]}
        if self.stats is not None:
            out.update({k: v.clone() for k, v in self.stats.items()})
        return out


# ----------------------------------------------------------------------------------------------
# the family
# ----------------------------------------------------------------------------------------------
@register("pxd-diffusion")
class PxdDiffusion(Family):
    config_cls = PxdDiffusionConfig
    outputs = ("pxd",)
    conditioned = True
    generate_batch_size = 4
    description = "denoising diffusion model (U-Net, DDPM/DDIM samplers) of PXD sensor images, conditioned on beam conditions"

    def build(self, cfg):
        net = DiffusionUNet(1, cfg.grid, cfg.base_channels, tuple(cfg.channel_mults), cfg.res_blocks, cfg.emb_dim)
        return {"denoiser": net, "decoder": CountDecoder()}

    def optimizers(self, cfg, modules):
        return {"denoiser": torch.optim.AdamW(modules["denoiser"].parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                              weight_decay=cfg.weight_decay)}

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        return DiffusionBatches(cfg, path, seed, rank, world_size)

    def step(self, state, batch, step_idx):
        """One denoising-loss step on a batch of single-sensor images."""
        cfg, net = state.cfg, state.modules["denoiser"]
        if "charge_hist" in batch:
            dec = state.modules["decoder"]
            for k in DECODER_STATS:
                getattr(dec, k).copy_(batch[k])
        x0 = batch["x"]
        n = len(x0)
        sched = _schedule(cfg)
        t = torch.randint(0, cfg.num_train_timesteps, (n,), device=x0.device)
        noise = torch.randn_like(x0)
        xt = sched.add_noise(x0, noise, t)
        mask = None
        if cfg.cond_dropout > 0:
            mask = (torch.rand(n, device=x0.device) >= cfg.cond_dropout).float()
        pred = net(xt, t, batch["sensor"], batch["cond"], mask)
        loss = F.mse_loss(pred, sched.target(x0, noise, t))
        state.update("denoiser", loss)
        return {"loss": loss.item()}

    # -- validation ------------------------------------------------------------------------------
    def load_val(self, cfg, path):
        from b2bkg.io import open_file

        with open_file(path) as f:
            n = min(cfg.val_events, f.n_events)
            digits, cond = f.read_pxd(0, n), f.read_conditions(0, n)
        return digits, (Conditions(_ordered_conditions(cond, n, str(path)), CONDITION_NAMES) if cond is not None else None)

    def validate(self, modules, cfg, val_data, seed):
        from b2bkg.pxd.models.pxd_data import validate_digits

        truth, cond = val_data
        dev = next(modules["denoiser"].parameters()).device
        gen = []
        n = truth.n_events
        for b0 in range(0, n, self.generate_batch_size):
            ev = np.arange(b0, min(n, b0 + self.generate_batch_size))
            c = None if cond is None else Conditions(cond.values[ev], cond.names)
            gen.append(self.sample(modules, cfg, ev, seed, dev, conditions=c)["pxd"])
        return validate_digits(PxdDigits.concat(gen), truth)

    # -- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, modules, cfg, events, seed, device, conditions=None, keep=None):
        """Generate events ``events``: (E*40) images by the sampler of ``cfg`` -> digits ``{"pxd": PxdDigits}``."""
        events = np.asarray(events, np.int64).reshape(-1)
        E = len(events)
        if E == 0:
            return {"pxd": PxdDigits.from_events([])}
        x0 = sample_images(modules["denoiser"], cfg, events, seed, device, conditions)  # (E*40, 1, H, W)
        if cfg.pixel_mode:
            adu = to_adu(crop_rows(x0), cfg.threshold_adu).view(E, N_SENSORS, N_UCELLS, N_VCELLS)
            return {"pxd": dense_to_digits(adu, cfg.threshold_adu)}
        dec = modules["decoder"]
        if not dec.fitted:
            raise ConfigError("pxd-diffusion: the decoder holds no fitted spectra (model not trained)")
        stats = {k: getattr(dec, k).cpu().numpy() for k in DECODER_STATS}
        counts = x_to_counts(x0, cfg.grid_factor[0] * cfg.grid_factor[1]).cpu().numpy().reshape(E, N_SENSORS, *cfg.grid)
        evs = [decode_count_maps(counts[j], cfg.grid_factor, stats, event_rng(seed, DECODE_DOMAIN, int(e)), cfg.threshold_adu)
               for j, e in enumerate(events)]
        return {"pxd": PxdDigits.from_events(evs)}


def _schedule(cfg: PxdDiffusionConfig) -> NoiseSchedule:
    return cfg.schedule()


def sample_images(net: DiffusionUNet, cfg: PxdDiffusionConfig, events: np.ndarray, seed: int, device,
                  conditions: Conditions | None = None) -> torch.Tensor:
    """Sample the 40 sensor images of each event with the configured sampler.

    Args:
        net: the denoiser (EMA weights for generation).
        events: (E,) int64 global event indices; event ``i``'s starting noise (and DDPM step noise)
            come from its own streams only.
        conditions: per-event beam conditions (E rows) or None (nominal).
    Returns:
        x0, (E*40, 1, H, W) float32 in [-1, 1], rows ordered (event, sensor).
    """
    E = len(events)
    H, W = cfg.grid
    dev = torch.device(device)
    cond = _ordered_conditions(conditions, E, "--conditions") if cfg.conditioned else np.tile(NOMINAL_CONDITIONS, (E, 1))
    if len(cond) != E:
        raise ConfigError(f"conditions: {len(cond)} rows for {E} events")
    c = condition_features(cond).to(dev).repeat_interleave(N_SENSORS, 0)  # (E*40, 6)
    sensor = torch.arange(N_SENSORS, device=dev).repeat(E)  # (E*40,)
    xT = event_normal(seed, events, (N_SENSORS, 1, H, W), dev).view(E * N_SENSORS, 1, H, W)
    sched = cfg.schedule()
    w = cfg.guidance_scale

    def model(x, t):
        out = net(x, t, sensor, c)
        if w != 1.0:
            un = net(x, t, sensor, c, torch.zeros(len(x), device=dev))
            out = un + w * (out - un)
        return out

    clip = cfg.clip_x0 if cfg.clip_x0 > 0 else None
    if cfg.sampler == "ddim":
        return ddim_sample(model, xT, sched, cfg.sampler_steps, clip_x0=clip)
    gens = event_generators(seed, events, DDPM_DOMAIN)

    def noise_fn(t):
        return torch.stack([torch.randn((N_SENSORS, 1, H, W), generator=g) for g in gens]).view(E * N_SENSORS, 1, H, W).to(dev)

    return ddpm_sample(model, xT, sched, noise_fn, clip_x0=clip)
