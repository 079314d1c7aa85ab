"""``pxd-event-gan``: one sample is a whole event, all 40 sensors generated at once (seed 001, "new approach").

Seed 001 replaced the sensor-conditioned IEA-GAN by a Wasserstein GAN with CNN layers that
"generates instances of background for all sensors at once", so that the correlations between
sensors can be learned from whole events. Here:

Generator (one event latent ``z`` in R^latent_dim -> 40 images)::

    z (B, L) --Dense--> (B, 40, S)                    one vector per sensor from the SAME z: the event's
                                                      shared state (beam conditions) reaches every sensor
    [(B*40, S), sensor embedding] --Dense--> (B*40, C0, h0, w0)   shared across sensors
    shared backbone over the B*40 sensor images, each block:
        2x nearest upsampling, concat ``noise_channels`` N(0,1) maps, Conv3x3, conditional norm
        (gain/bias from [the sensor's vector from z, a learned sensor embedding]: the "sensor
        channels"; ``norm: event`` normalizes over the 40 images of the event), ReLU
    concat noise maps, Conv1x1 -> fr*fc channels, + sensor offset [+ event shift], tanh   (B, 40, fr*fc, R, C) in [-1, 1]

The *sensor offset* is a learned pre-tanh offset per sensor (40 numbers, zero-initialized); with
``init_occupancy`` (small config) ``prepare`` sets it by bisection so that the untrained generator
already has the training file's occupancy of every sensor
(:func:`b2bkg.pxd.models.gan_stats.init_event_offsets`).

Optional *event shift* (``event_shift: true``): ``Linear(z)`` (one number per event, zero-initialized)
added to the pre-tanh output of all 40 sensors, a direct path for what moves every sensor together
(the beam conditions scale all sources of an event at once). Measured on the small config (80
steps, batch 1 event, no statistics matching): the critic did not hold it back and the
sensor-occupancy correlations came out ~0.9 instead of the data's ~0.1. With ``norm: event`` the
common mode of the 40 sensors is normalized away inside the trunk (correlations come out at
-1/39 without a path around the norm); as a 30-step continuation with the covariance term it still
overshot (+0.35 vs +0.11). The small config uses the *event factors* below instead.

*Event factors* (``event_factors: k``, the small config): the sensor-occupancy correlations of the
data come from event-level fluctuations of the background sources (beam currents, vacuum,
injection) that scale every sensor's rate together, each sensor by its own amount. The first k
components ``u`` of the event latent z enter each sensor's pre-tanh output as
``sensor_scale[s] . u`` ((40, k) learned scales), after the last norm, so no normalization divides
them away; with ``init_occupancy`` ``prepare`` initialises the scales from the training data's
leading principal components of the log sensor occupancies (:func:`~b2bkg.pxd.models.gan_stats.init_event_factors`),
and the covariance term of the statistics matching trains them further. A single ``event_shift``
is the special case of one factor with equal scales; unconstrained, it overshot.

A Pearson correlation is the shared covariance over the product of the two sensors' total spreads,
so the factors alone are not enough: the untrained small generator's own per-sensor spread (from
z through ``to_sensors``) was 0.13 (coefficient of variation of a sensor's occupancy over events)
vs the data's 0.08, and diluted the factors' correlations to 0.03 (data: 0.09). With
``init_spread`` ``prepare`` scales the latent input layer (:attr:`EventGenerator.latent_layer`) down
until that own spread matches the data's part not explained by the factors
(:func:`~b2bkg.pxd.models.gan_stats.init_event_spread`); the covariance term weighs the diagonal
(each sensor's spread) as much as the off-diagonal part, so training keeps it there.

The noise maps give each pixel its own randomness (hit positions are random; a 64-dimensional z
cannot place ~70 000 hits). Output channels are the ``grid_factor`` space-to-depth cells
(:mod:`b2bkg.pxd.models.pxd_data`), shuffled back to 256 x 768 and cropped to 250 rows.

Critic (sees the whole event, so it can reject wrong sensor correlations)::

    each sensor image (B*40, fr*fc, R, C): Conv1x1 (cell embedding) + LeakyReLU, then stride-2 Conv3x3 + LeakyReLU blocks,
    mean and max pooling -> (B, 40, 2F); concatenated in sensor order (B, 40*2F) -> MLP -> score (B, 1)

Why the norm is conditioned on z: a norm layer normalizing over the 40 images of one event (BatchNorm
with one event per batch in training) removes whatever the 40 sensors share, i.e. exactly the
event-level occupancy shift that makes the sensors correlated; feeding the event latent into the
gain and bias (BigGAN's hierarchical latent) puts it back after every normalization.

Loss: WGAN-GP on whole events (penalty on interpolated events), ``n_critic`` critic updates per
generator update, Adam; lr schedule of the trainer; optionally (``fm_*`` weights, the small config)
the event-statistics matching of :mod:`b2bkg.pxd.models.gan_stats` added to the generator loss
(per-sensor occupancy, covariance of the per-event sensor occupancies, charge spectrum).

Example:
    >>> import torch
    >>> cfg = EventGanConfig(grid_factor=(8, 8), latent_dim=8, channels=(8, 8, 8), critic_channels=(8, 8),
    ...                      noise_channels=1, head_hidden=8)
    >>> g, d = EventGenerator(cfg), EventCritic(cfg)
    >>> x = g(torch.randn(1, 8), g.draw_noise(1))
    >>> tuple(x.shape), tuple(d(x).shape)
    ((1, 40, 64, 32, 96), (1, 1))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError
from b2bkg.io.events import N_SENSORS
from b2bkg.training.registry import Family, register
from b2bkg.training.sampling import event_normal

from .gan_stats import build_stats, init_event_factors, init_event_offsets, init_event_spread, prepare_stats, stats_loss
from .pxd_data import EventImageBatches, PxdImageGanConfig, images_to_digits, load_digits, validate_digits, wgan_gp_step

__all__ = [
    "EventGanConfig", "EventGenerator", "EventCritic", "PxdEventGan", "ConditionalBatchNorm", "NoisyUpTrunk",
    "SensorEncoder", "split_noise", "generator_param_groups",
]


@dataclass(frozen=True)
class EventGanConfig(PxdImageGanConfig):
    """``pxd-event-gan`` config (``batch_size`` = events per batch).

    Attributes:
        latent_dim: event latent z (shared by the 40 sensors).
        sensor_latent_dim: size S of the per-sensor vectors the first Dense makes from z.
        event_shift: add a learned per-event offset (from z) to the pre-tanh output of all sensors.
        event_factors: k > 0: the first k components u of z also move each sensor's pre-tanh output
            by ``sensor_scale[s] . u`` (a learned (40, k) scale per sensor, around every norm):
            the event-level occupancy fluctuation the sensors share (see the module docstring).
        event_factor_lr: learning rate of the (40, k) ``sensor_scale`` relative to ``lr``: its
            values are ~0.005-0.05 (pre-tanh units), so Adam's per-parameter steps of ``lr`` would
            random-walk them away from the data initialisation within a hundred steps.
        offset_lr: learning rate of the (40,) ``sensor_offset`` relative to ``lr`` (with Adam every
            parameter moves by ~lr per step, so the 40 offsets cannot follow an occupancy drift made
            by the many trunk weights at the same lr).
        base_grid: (rows, cols) of the Dense output per sensor; ``base_grid * 2**len(channels)``
            must equal the internal grid (256 / fr, 768 / fc).
        channels: output channels of the generator blocks (2x upsampling each).
        noise_channels: N(0, 1) maps concatenated to the input of every generator convolution.
        sensor_dim: size of the learned sensor embedding driving (with the sensor's latent vector)
            the conditional norm.
        critic_channels: per-sensor encoder: first Conv1x1 to ``critic_channels[0]``, then
            one stride-2 Conv3x3 per further entry.
        head_hidden: hidden units of the critic's event-level MLP.
        n_critic, gp_lambda: WGAN-GP critic updates per generator update and penalty weight.
        norm: ``event``: the trunk's conditional norm normalizes each event's 40 images together,
            the same in training and sampling; ``batch``: BatchNorm (running statistics when sampling).
    """

    batch_size: int = 1
    grid_factor: tuple[int, ...] = (8, 8)
    val_events: int = 10
    latent_dim: int = 64
    sensor_latent_dim: int = 32
    event_shift: bool = False
    event_factors: int = 0
    event_factor_lr: float = 0.1
    offset_lr: float = 1.0
    base_grid: tuple[int, ...] = (4, 12)
    channels: tuple[int, ...] = (32, 16, 16)
    noise_channels: int = 4
    sensor_dim: int = 16
    critic_channels: tuple[int, ...] = (8, 16, 32)
    head_hidden: int = 64
    leaky_slope: float = 0.2
    n_critic: int = 2
    gp_lambda: float = 10.0
    norm: Literal["batch", "event"] = "event"

    def __post_init__(self):
        super().__post_init__()
        check_range("latent_dim", self.latent_dim, 1, 4096)
        check_range("sensor_latent_dim", self.sensor_latent_dim, 1, 4096)
        check_range("event_factors", self.event_factors, 0, self.latent_dim)
        check_range("event_factor_lr", self.event_factor_lr, 0.0, 100.0)
        check_range("offset_lr", self.offset_lr, 0.0, 1000.0)
        check_range("noise_channels", self.noise_channels, 0, 256)
        check_range("sensor_dim", self.sensor_dim, 1, 4096)
        check_range("head_hidden", self.head_hidden, 1, 65536)
        check_range("n_critic", self.n_critic, 1, 100)
        check_range("gp_lambda", self.gp_lambda, 0.0, None)
        check_range("leaky_slope", self.leaky_slope, 0.0, 1.0)
        _check_trunk(self)
        if not self.critic_channels or min(self.critic_channels) < 1:
            raise ConfigError(f"critic_channels: {self.critic_channels} must be a non-empty list of positive integers")


def _check_trunk(cfg) -> None:
    if len(cfg.base_grid) != 2 or min(cfg.base_grid) < 1:
        raise ConfigError(f"base_grid: {cfg.base_grid} must be two positive integers (rows, cols)")
    if not cfg.channels or min(cfg.channels) < 1:
        raise ConfigError(f"channels: {cfg.channels} must be a non-empty list of positive integers")
    f = 2 ** len(cfg.channels)
    got = (cfg.base_grid[0] * f, cfg.base_grid[1] * f)
    if got != cfg.grid:
        raise ConfigError(f"base_grid {tuple(cfg.base_grid)} x 2^{len(cfg.channels)} = {got} must equal the internal grid "
                          f"{cfg.grid} of grid_factor {tuple(cfg.grid_factor)}")


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without affine parameters, gain and bias predicted from a condition vector.

    ``forward(h, c)``: h (N, C, H, W), c (N, cond_dim) -> (N, C, H, W) = norm(h) * (1 + gain(c)) + bias(c).

    ``group`` = 0: ``norm`` is ``BatchNorm2d`` (batch statistics in training, running ones in eval).
    ``group`` = k > 0 (*event norm*): the N images form N/k consecutive events of k images and each
    channel is normalized over the k images x H x W of its own event, the same in training and
    sampling (no running statistics, output independent of the batch): training BatchNorm with one
    event per batch, without its train/eval switch.
    """

    def __init__(self, channels: int, cond_dim: int, group: int = 0):
        super().__init__()
        self.group = int(group)
        self.bn = nn.BatchNorm2d(channels, affine=False) if self.group == 0 else None
        self.gain = nn.Linear(cond_dim, channels)
        self.bias = nn.Linear(cond_dim, channels)
        for p in (self.gain.weight, self.gain.bias, self.bias.weight, self.bias.bias):
            nn.init.zeros_(p)  # starts as the plain norm; the condition's effect is learned

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.bn is not None:
            hn = self.bn(h)
        else:
            g = h.view(h.shape[0] // self.group, self.group, *h.shape[1:])  # (E, k, C, H, W)
            d = g - g.mean((1, 3, 4), keepdim=True)
            hn = (d / torch.sqrt((d * d).mean((1, 3, 4), keepdim=True) + 1e-5)).view_as(h)  # per event and channel
        return hn * (1 + self.gain(c))[:, :, None, None] + self.bias(c)[:, :, None, None]


class NoisyUpTrunk(nn.Module):
    """Shared image backbone: (N, C0, h0, w0) features + per-image condition -> (N, out_channels, R, C) in [-1, 1].

    Each block: 2x nearest upsampling, concat ``noise_channels`` noise maps, Conv3x3, conditional BN
    (``norm_group`` > 0: event norm over groups of that many images, see :class:`ConditionalBatchNorm`), ReLU;
    then concat noise, Conv1x1 to ``out_channels`` (per cell: the pixels of a space-to-depth cell), tanh. ``noise``: list of (N, noise_channels, h_j, w_j)
    tensors, one per block plus one for the output conv (:meth:`noise_shapes`).
    """

    def __init__(self, c0: int, channels, base_grid, noise_channels: int, cond_dim: int, out_channels: int,
                 out_bias_init: float = 0.0, norm_group: int = 0):
        super().__init__()
        self.base_grid, self.noise_channels = tuple(base_grid), int(noise_channels)
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        c_in = c0
        for c in channels:
            self.convs.append(nn.Conv2d(c_in + noise_channels, c, 3, padding=1))
            self.norms.append(ConditionalBatchNorm(c, cond_dim, norm_group))
            c_in = c
        self.out = nn.Conv2d(c_in + noise_channels, out_channels, 1)
        with torch.no_grad():
            self.out.bias.fill_(out_bias_init)

    def noise_shapes(self) -> list[tuple[int, int, int]]:
        """(noise_channels, h, w) of each noise input (blocks, then the output conv), per image."""
        h, w = self.base_grid
        shapes = []
        for _ in self.convs:
            h, w = 2 * h, 2 * w
            shapes.append((self.noise_channels, h, w))
        return shapes + [(self.noise_channels, h, w)]

    def forward(self, h: torch.Tensor, cond: torch.Tensor, noise: list[torch.Tensor], shift: torch.Tensor | None = None) -> torch.Tensor:
        """``shift``: optional (N,) offset added to the pre-tanh output of each image."""
        for conv, norm, nz in zip(self.convs, self.norms, noise):
            h = F.interpolate(h, scale_factor=2, mode="nearest")  # (N, C, 2h, 2w)
            h = F.relu(norm(conv(torch.cat([h, nz], 1) if self.noise_channels else h), cond))
        nz = noise[-1]
        y = self.out(torch.cat([h, nz], 1) if self.noise_channels else h)  # (N, out_channels, R, C) pre-tanh
        if shift is not None:
            y = y + shift[:, None, None, None]
        return torch.tanh(y)


def split_noise(flat: torch.Tensor, shapes) -> list[torch.Tensor]:
    """(B, total) per-event draws -> list of (B, *shape) tensors (``shapes`` per event)."""
    sizes = [int(np.prod(s)) for s in shapes]
    return [p.reshape(flat.shape[0], *s) for p, s in zip(torch.split(flat, sizes, dim=1), shapes)]


class SensorEncoder(nn.Module):
    """Per-sensor image encoder shared by the event critic and the IEA-GAN discriminator.

    ``forward(x)``: (N, fr*fc, R, C) -> (N, 2F): mean and max pooling of the last feature map.
    ``sn=True`` wraps every convolution in spectral normalization.
    """

    def __init__(self, in_channels: int, channels, slope: float = 0.2, sn: bool = False):
        super().__init__()
        wrap = nn.utils.parametrizations.spectral_norm if sn else (lambda m: m)
        layers, c_in = [], in_channels
        for i, c in enumerate(channels):
            conv = nn.Conv2d(c_in, c, 1) if i == 0 else nn.Conv2d(c_in, c, 3, stride=2, padding=1)
            layers += [wrap(conv), nn.LeakyReLU(slope)]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.out_dim = 2 * c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)  # (N, F, R / 2^k, C / 2^k)
        return torch.cat([h.mean((-2, -1)), h.amax((-2, -1))], 1)  # (N, 2F)



class EventNoiseMixin:
    """Per-event noise inputs of a generator whose ``trunk`` is a :class:`NoisyUpTrunk` run over
    the 40 sensors of each event (shared by the event-level GAN and the IEA-GAN)."""

    def noise_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the per-event noise inputs: (40, noise_channels, h, w) each."""
        return [(N_SENSORS, *s) for s in self.trunk.noise_shapes()]

    def draw_noise(self, batch: int, device=None) -> list[torch.Tensor]:
        """Training noise from torch's global RNG."""
        return [torch.randn(batch, *s, device=device) for s in self.noise_shapes()]

class EventGenerator(EventNoiseMixin, nn.Module):
    """Event latent -> all 40 sensor images at once.

    ``forward(z, noise)``: z (B, latent_dim), noise list as :meth:`draw_noise` gives ->
    (B, 40, fr*fc, R, C) in [-1, 1].
    """

    def __init__(self, cfg: EventGanConfig):
        super().__init__()
        self.cfg = cfg
        c0 = cfg.channels[0]
        self.to_sensors = nn.Linear(cfg.latent_dim, N_SENSORS * cfg.sensor_latent_dim)
        self.sensor_embedding = nn.Embedding(N_SENSORS, cfg.sensor_dim)
        self.dense = nn.Linear(cfg.sensor_latent_dim + cfg.sensor_dim, c0 * cfg.base_grid[0] * cfg.base_grid[1])
        self.event_shift = nn.Linear(cfg.latent_dim, 1) if cfg.event_shift else None  # (B,) pre-tanh offset
        if self.event_shift is not None:
            nn.init.zeros_(self.event_shift.weight)
            nn.init.zeros_(self.event_shift.bias)
        self.trunk = NoisyUpTrunk(c0, cfg.channels, cfg.base_grid, cfg.noise_channels, cfg.sensor_latent_dim + cfg.sensor_dim,
                                  cfg.cell_channels, cfg.out_bias_init, N_SENSORS if cfg.norm == "event" else 0)
        self.sensor_offset = nn.Parameter(torch.zeros(N_SENSORS))  # pre-tanh output offset per sensor (init_occupancy)
        # (40, k) response of each sensor's pre-tanh output to the event factors u = z[:, :k] (init_event_factors)
        self.sensor_scale = nn.Parameter(torch.zeros(N_SENSORS, cfg.event_factors)) if cfg.event_factors else None
        self.register_buffer("sensors", torch.arange(N_SENSORS), persistent=False)

    @property
    def latent_layer(self) -> nn.Linear:
        """The layer whose input is the event latent z (its weight sets how much each sensor's image
        moves with z: :func:`~b2bkg.pxd.models.gan_stats.init_event_spread`)."""
        return self.to_sensors

    def forward(self, z: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        cfg, b = self.cfg, z.shape[0]
        per_sensor = self.to_sensors(z).view(b * N_SENSORS, cfg.sensor_latent_dim)  # (B*40, S)
        cond = torch.cat([per_sensor, self.sensor_embedding(self.sensors).repeat(b, 1)], 1)  # (B*40, S + sensor_dim)
        h = self.dense(cond).view(b * N_SENSORS, cfg.channels[0], *cfg.base_grid)  # (B*40, C0, h0, w0)
        nz = [n.reshape(b * N_SENSORS, *n.shape[2:]) for n in noise]
        shift = self.sensor_offset.repeat(b)  # (B*40,) per-sensor pre-tanh offset
        if self.event_shift is not None:
            shift = shift + self.event_shift(z)[:, 0].repeat_interleave(N_SENSORS)
        if self.sensor_scale is not None:  # event factors: each sensor's learned response to the shared u
            shift = shift + (z[:, :cfg.event_factors] @ self.sensor_scale.T).reshape(-1)  # (B, 40) -> (B*40,)
        x = self.trunk(h, cond, nz, shift)  # (B*40, fr*fc, R, C)
        return x.view(b, N_SENSORS, *x.shape[1:])


class EventCritic(nn.Module):
    """Whole event -> WGAN score. ``forward(x)``: (B, 40, fr*fc, R, C) -> (B, 1)."""

    def __init__(self, cfg: EventGanConfig):
        super().__init__()
        self.encoder = SensorEncoder(cfg.cell_channels, cfg.critic_channels, cfg.leaky_slope)
        self.head = nn.Sequential(nn.Linear(N_SENSORS * self.encoder.out_dim, cfg.head_hidden), nn.LeakyReLU(cfg.leaky_slope),
                                  nn.Linear(cfg.head_hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        f = self.encoder(x.reshape(b * N_SENSORS, *x.shape[2:]))  # (B*40, 2F)
        return self.head(f.view(b, -1))  # (B, 1)


def generator_param_groups(G: nn.Module, lr: float, scale_lr_factor: float, offset_lr_factor: float = 1.0) -> list[dict]:
    """Adam parameter groups of an event generator: everything at ``lr``, its ``sensor_scale`` (event
    factors, if any) at ``lr * scale_lr_factor``, its ``sensor_offset`` at ``lr * offset_lr_factor``."""
    scale, offset = getattr(G, "sensor_scale", None), G.sensor_offset
    rest = [p for p in G.parameters() if p is not scale and p is not offset]
    groups = [{"params": rest, "lr": lr}, {"params": [offset], "lr": lr * offset_lr_factor}]
    if scale is not None:
        groups.append({"params": [scale], "lr": lr * scale_lr_factor})
    return groups


def _draw_event_latents(gen, latent_shape, seed, events, device):
    """Event ``i``'s latent(s) and noise maps, all from ``torch_generator(seed, "generate", i)``."""
    shapes = [latent_shape] + gen.noise_shapes()
    flat = event_normal(seed, events, (sum(int(np.prod(s)) for s in shapes),), device)
    parts = split_noise(flat, shapes)
    return parts[0], parts[1:]


class EventImageFamily(Family):
    """What the event-level image GANs share (``pxd-event-gan``, ``pxd-iea-gan``): whole events of 40
    images as training batches, the statistics targets and per-sensor offsets set from the data,
    validation, and sampling event ``i`` from latents of shape :meth:`latent_shape` plus the
    generator's noise maps, all drawn from ``torch_generator(seed, "generate", i)``."""

    outputs = ("pxd",)
    generate_batch_size = 4

    def latent_shape(self, cfg) -> tuple[int, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self, cfg, modules, data):
        G = modules["generator"]
        prepare_stats(cfg, modules, data.digits)
        init_event_offsets(cfg, G, data.digits, self.latent_shape(cfg))
        if init_event_spread(cfg, G, data.digits, self.latent_shape(cfg)) is not None:
            init_event_offsets(cfg, G, data.digits, self.latent_shape(cfg))  # the mean moves with the spread
        init_event_factors(cfg, G, data.digits, self.latent_shape(cfg))

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        return EventImageBatches(load_digits(path, cfg.max_train_events), cfg.batch_size, seed, cfg.grid_factor, rank, world_size)

    def load_val(self, cfg, path):
        return load_digits(path, cfg.val_events)

    def validate(self, modules, cfg, val_data, seed):
        dev = next(modules["generator"].parameters()).device
        return validate_digits(self.sample(modules, cfg, np.arange(cfg.val_events), seed, dev)["pxd"], val_data)

    @torch.no_grad()
    def sample(self, modules, cfg, events, seed, device, conditions=None, keep=None):
        G = modules["generator"]
        z, noise = _draw_event_latents(G, self.latent_shape(cfg), seed, events, device)
        return {"pxd": images_to_digits(G(z, noise), cfg.grid_factor, cfg.threshold_adu)}


@register("pxd-event-gan")
class PxdEventGan(EventImageFamily):
    config_cls = EventGanConfig
    description = "event-level WGAN-GP: all 40 sensors of an event from one latent (seed 001, new approach)"

    def build(self, cfg):
        return {"generator": EventGenerator(cfg), "critic": EventCritic(cfg), **build_stats(cfg, N_SENSORS)}

    def optimizers(self, cfg, modules):
        betas = (cfg.beta1, cfg.beta2)
        return {"generator": torch.optim.Adam(generator_param_groups(modules["generator"], cfg.lr, cfg.event_factor_lr, cfg.offset_lr), betas=betas),
                "critic": torch.optim.Adam(modules["critic"].parameters(), lr=cfg.lr, betas=betas)}

    def latent_shape(self, cfg):
        return (cfg.latent_dim,)

    def step(self, state, batch, step_idx):
        """``n_critic`` WGAN-GP updates on whole events (B, 40, fr*fc, R, C), then one generator update."""
        cfg, G, dev = state.cfg, state.modules["generator"], state.device
        return wgan_gp_step(state, batch, lambda b: b,
                            lambda n: G(torch.randn(n, cfg.latent_dim, device=dev), G.draw_noise(n, dev)),
                            lambda fake: stats_loss(cfg, state.modules, fake, cfg.grid_factor))
