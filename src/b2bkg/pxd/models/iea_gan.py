"""``pxd-iea-gan``: sensor-conditioned GAN with relational reasoning across the 40 sensors (IEA-GAN).

After Hosseini et al. (IEA-GAN, seed 001 "previous approach"; REFERENCE.md): one batch = one
event (``batch_size`` events per step, 1 in the shipped configs), each event = 40 images, one per
sensor.

Generator::

    token_s = Embedding(sensor s) + Linear(z_s),   z_s ~ N(0, I) per sensor      (B, 40, E)
    h_s     = TransformerEncoder(1 layer, across the 40 sensors of the event)(token)   (B, 40, E)
              -> the sensors of one event share information: their occupancies can move together
    c_s     = [h_s, Embedding(s)]                                                 condition of image s
    Dense(c_s) -> (C0, h0, w0); blocks of 2x upsampling + noise maps + Conv3x3 + conditional
    norm (gain/bias from c_s; ``norm: event`` normalizes over the event's 40 images, ``batch`` is
    BatchNorm) + ReLU; Conv1x1 -> fr*fc channels, + per-sensor offset, tanh (the shared backbone of
    :class:`~b2bkg.pxd.models.event_gan.NoisyUpTrunk`; offset as in ``pxd-event-gan``)

Discriminator (projection discriminator, spectral normalization)::

    phi = SensorEncoder(image) (N, 2F);  D(x, s) = Linear(phi) + <Embedding_D(s), phi>

Losses: hinge (D: relu(1 - D(real)) + relu(1 + D(fake)); G: -D(fake)), plus for the generator

* intra-event loss ``lambda_intra * KL(P_real || P_fake)``: for each event, the 40 normalized
  discriminator embeddings ``phi`` give a Gram matrix ``e e^T / tau`` (40 x 40, diagonal masked),
  softmaxed row by row; the KL between real and generated rows, averaged, asks the generated
  sensors of an event to relate to each other as real ones do;
* uniformity loss ``lambda_unif * log mean_{i != j} exp(-2 ||e_i - e_j||^2)`` on the normalized
  generated embeddings (Wang & Isola 2020): spreads them on the sphere, against mode collapse.

Event factors (``event_factors: k``, the small config): IEA-GAN's per-sensor noise and event norm
leave no shared event-level occupancy fluctuation (measured: correlations ~ -0.02 vs the data's
+0.1); the data's correlations come from the beam conditions of an event scaling all sensors
together. An event latent u ~ N(0, I_k) shared by the 40 sensors moves each sensor's pre-tanh
output by ``sensor_scale[s] . u`` (learned (40, k) scales, after the last norm), initialised from the
data as in ``pxd-event-gan`` (:func:`~b2bkg.pxd.models.gan_stats.init_event_factors`); with
``init_spread`` the per-sensor latent's input layer ``z_proj`` is scaled so that each sensor's own
occupancy spread is the data's part not explained by the factors
(:func:`~b2bkg.pxd.models.gan_stats.init_event_spread`), as in ``pxd-event-gan``.

Optionally (``fm_*`` weights, the small config) the event-statistics matching of
:mod:`b2bkg.pxd.models.gan_stats` is added to the generator loss.

EMA of the generator weights (trainer: ``ema_decay``, ``ema_modules: [generator]``) is what
``generate`` samples from. Adam with betas (0, 0.999) as the reference. Not implemented from the
original: the class-contrastive (2C) loss and the BigGAN-deep residual blocks (a plain conv trunk
instead).

Example:
    >>> import torch
    >>> cfg = IeaGanConfig(latent_dim=4, embed_dim=8, heads=2, channels=(8, 8, 8), critic_channels=(8, 8), noise_channels=1)
    >>> g, d = IeaGenerator(cfg), IeaDiscriminator(cfg)
    >>> x = g(torch.randn(1, 40, 4), g.draw_noise(1))
    >>> tuple(x.shape), tuple(d(x)[0].shape)
    ((1, 40, 64, 32, 96), (1, 40))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
import torch.nn.functional as F

from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError
from b2bkg.io.events import N_SENSORS
from b2bkg.training.registry import register

from .event_gan import EventImageFamily, EventNoiseMixin, NoisyUpTrunk, SensorEncoder, _check_trunk, generator_param_groups
from .gan_stats import build_stats, stats_loss
from .pxd_data import PxdImageGanConfig, soft_zero_suppress

__all__ = ["IeaGanConfig", "IeaGenerator", "IeaDiscriminator", "PxdIeaGan", "intra_event_loss", "uniformity_loss"]


@dataclass(frozen=True)
class IeaGanConfig(PxdImageGanConfig):
    """``pxd-iea-gan`` config (``batch_size`` = events per step).

    Attributes:
        latent_dim: per-sensor noise z_s.
        embed_dim: sensor-token size E (transformer width).
        heads: attention heads of the one-layer transformer (must divide ``embed_dim``).
        base_grid, channels, noise_channels: generator trunk as in ``pxd-event-gan``.
        critic_channels: discriminator's per-sensor encoder.
        n_dis: discriminator updates per generator update.
        d_lr_factor: discriminator lr = ``lr * d_lr_factor`` (BigGAN: 4).
        d_spectral_norm: spectral normalization of every discriminator layer (BigGAN / IEA-GAN: on).
        lambda_intra, tau: weight and temperature of the intra-event Gram-matrix KL.
        lambda_unif: weight of the uniformity loss.
        norm: ``event`` (conditional norm over each event's 40 images, the same in training and
            sampling) or ``batch`` (BatchNorm; running statistics when sampling). See
            :class:`~b2bkg.pxd.models.event_gan.ConditionalBatchNorm`.
        event_shift: add ``Linear(mean over sensors of the transformer output)`` (zero-initialized), one
            number per event, to the pre-tanh output of all 40 sensors: a direct path for what moves
            every sensor of an event together (an event norm alone removes that common mode).
        event_factors: k > 0: an event latent u ~ N(0, I_k) (the last noise input), shared by the 40
            sensors, moves each sensor's pre-tanh output by ``sensor_scale[s] . u`` (learned (40, k)
            scales, initialised from the data's occupancy covariance by ``prepare``), around every norm.
        event_factor_lr: learning rate of ``sensor_scale`` relative to ``lr`` (as in ``pxd-event-gan``).
        offset_lr: learning rate of the (40,) ``sensor_offset`` relative to ``lr`` (as in ``pxd-event-gan``).
    """

    batch_size: int = 1
    grid_factor: tuple[int, ...] = (8, 8)
    val_events: int = 10
    lr: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.999
    ema_decay: float = 0.99
    ema_modules: tuple[str, ...] = ("generator",)
    latent_dim: int = 32
    embed_dim: int = 32
    heads: int = 4
    base_grid: tuple[int, ...] = (4, 12)
    channels: tuple[int, ...] = (32, 16, 16)
    noise_channels: int = 4
    critic_channels: tuple[int, ...] = (8, 16, 32)
    leaky_slope: float = 0.2
    n_dis: int = 2
    d_lr_factor: float = 1.0
    d_spectral_norm: bool = True
    lambda_intra: float = 1.0
    tau: float = 0.1
    lambda_unif: float = 0.1
    norm: Literal["batch", "event"] = "event"
    event_shift: bool = False
    event_factors: int = 0
    event_factor_lr: float = 0.1
    offset_lr: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        check_range("latent_dim", self.latent_dim, 1, 4096)
        check_range("embed_dim", self.embed_dim, 1, 4096)
        check_range("heads", self.heads, 1, 64)
        if self.embed_dim % self.heads:
            raise ConfigError(f"heads: {self.heads} must divide embed_dim {self.embed_dim}")
        check_range("noise_channels", self.noise_channels, 0, 256)
        check_range("n_dis", self.n_dis, 1, 100)
        check_range("event_factors", self.event_factors, 0, 4096)
        check_range("event_factor_lr", self.event_factor_lr, 0.0, 100.0)
        check_range("offset_lr", self.offset_lr, 0.0, 1000.0)
        check_range("d_lr_factor", self.d_lr_factor, 0.0, 100.0)
        check_range("lambda_intra", self.lambda_intra, 0.0, None)
        check_range("tau", self.tau, 1e-4, 100.0)
        check_range("lambda_unif", self.lambda_unif, 0.0, None)
        check_range("leaky_slope", self.leaky_slope, 0.0, 1.0)
        _check_trunk(self)
        if not self.critic_channels or min(self.critic_channels) < 1:
            raise ConfigError(f"critic_channels: {self.critic_channels} must be a non-empty list of positive integers")


class IeaGenerator(EventNoiseMixin, nn.Module):
    """Per-sensor noise + sensor embedding -> transformer across sensors -> 40 conditioned images.

    ``forward(z, noise)``: z (B, 40, latent_dim), noise as :meth:`draw_noise` (the trunk's maps, then
    with ``event_factors`` = k the event latent u (B, k)) -> (B, 40, fr*fc, R, C) in [-1, 1].
    """

    def __init__(self, cfg: IeaGanConfig):
        super().__init__()
        self.cfg = cfg
        e, c0 = cfg.embed_dim, cfg.channels[0]
        self.sensor_embedding = nn.Embedding(N_SENSORS, e)
        self.z_proj = nn.Linear(cfg.latent_dim, e)
        self.relational = nn.TransformerEncoderLayer(e, cfg.heads, dim_feedforward=2 * e, dropout=0.0, batch_first=True)
        self.dense = nn.Linear(2 * e, c0 * cfg.base_grid[0] * cfg.base_grid[1])
        self.trunk = NoisyUpTrunk(c0, cfg.channels, cfg.base_grid, cfg.noise_channels, 2 * e, cfg.cell_channels, cfg.out_bias_init,
                                  N_SENSORS if cfg.norm == "event" else 0)
        self.event_shift = nn.Linear(e, 1) if cfg.event_shift else None  # (B,) pre-tanh offset of all 40 sensors
        if self.event_shift is not None:
            nn.init.zeros_(self.event_shift.weight)
            nn.init.zeros_(self.event_shift.bias)
        self.sensor_offset = nn.Parameter(torch.zeros(N_SENSORS))  # pre-tanh output offset per sensor (init_occupancy)
        # (40, k) response of each sensor's pre-tanh output to the event latent u (init_event_factors)
        self.sensor_scale = nn.Parameter(torch.zeros(N_SENSORS, cfg.event_factors)) if cfg.event_factors else None
        self.register_buffer("sensors", torch.arange(N_SENSORS), persistent=False)

    @property
    def latent_layer(self) -> nn.Linear:
        """The layer whose input is the per-sensor latent z_s (:func:`~b2bkg.pxd.models.gan_stats.init_event_spread`)."""
        return self.z_proj

    def noise_shapes(self) -> list[tuple[int, ...]]:
        """The trunk's (40, noise_channels, h, w) maps, then (k,) for the event latent u if ``event_factors``."""
        shapes = EventNoiseMixin.noise_shapes(self)
        return shapes + [(self.cfg.event_factors,)] if self.cfg.event_factors else shapes

    def forward(self, z: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        cfg, b = self.cfg, z.shape[0]
        emb = self.sensor_embedding(self.sensors).expand(b, -1, -1)  # (B, 40, E)
        h = self.relational(emb + self.z_proj(z))  # (B, 40, E): attention across the event's sensors
        cond = torch.cat([h, emb], -1).reshape(b * N_SENSORS, -1)  # (B*40, 2E)
        x0 = self.dense(cond).view(b * N_SENSORS, cfg.channels[0], *cfg.base_grid)
        shift = self.sensor_offset.repeat(b)  # (B*40,)
        if self.event_shift is not None:  # one offset per event from the transformer's pooled state
            shift = shift + self.event_shift(h.mean(1))[:, 0].repeat_interleave(N_SENSORS)
        if self.sensor_scale is not None:  # event factors: each sensor's learned response to the shared u
            u, noise = noise[-1], noise[:-1]  # (B, k)
            shift = shift + (u @ self.sensor_scale.T).reshape(-1)  # (B, 40) -> (B*40,)
        x = self.trunk(x0, cond, [n.reshape(b * N_SENSORS, *n.shape[2:]) for n in noise], shift)  # (B*40, fr*fc, R, C)
        return x.view(b, N_SENSORS, *x.shape[1:])


class IeaDiscriminator(nn.Module):
    """Projection discriminator (spectral normalization of every layer if ``cfg.d_spectral_norm``).

    ``forward(x)``: (B, 40, fr*fc, R, C) -> (scores (B, 40), embeddings (B, 40, 2F)).
    """

    def __init__(self, cfg: IeaGanConfig):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm if cfg.d_spectral_norm else (lambda m: m)
        self.encoder = SensorEncoder(cfg.cell_channels, cfg.critic_channels, cfg.leaky_slope, sn=cfg.d_spectral_norm)
        d = self.encoder.out_dim
        self.linear = sn(nn.Linear(d, 1))
        self.embedding = sn(nn.Embedding(N_SENSORS, d))
        self.register_buffer("sensors", torch.arange(N_SENSORS), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        phi = self.encoder(x.reshape(b * N_SENSORS, *x.shape[2:])).view(b, N_SENSORS, -1)  # (B, 40, 2F)
        proj = (self.embedding(self.sensors)[None] * phi).sum(-1)  # (B, 40)
        return self.linear(phi)[..., 0] + proj, phi


def _gram_logprob(e: torch.Tensor, tau: float) -> torch.Tensor:
    """e (B, 40, D) -> row-wise log-softmax of the Gram matrix of the normalized rows / tau, diagonal masked."""
    e = F.normalize(e, dim=-1)
    g = e @ e.transpose(1, 2) / tau  # (B, 40, 40)
    eye = torch.eye(e.shape[1], dtype=torch.bool, device=e.device)
    return torch.log_softmax(g.masked_fill(eye, -1e4), dim=-1)


def intra_event_loss(real_emb: torch.Tensor, fake_emb: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """KL(P_real || P_fake) of the softmaxed Gram matrices of event embeddings (B, 40, D), mean over rows.

    Real and generated events are not paired: each batch average is compared (mean of P over events).
    """
    lp_r, lp_f = _gram_logprob(real_emb, tau), _gram_logprob(fake_emb, tau)
    p_r = lp_r.exp().mean(0)  # (40, 40) average real relation of sensor i to the others
    lp_f_mean = torch.log(lp_f.exp().mean(0) + 1e-12)
    eye = torch.eye(p_r.shape[0], dtype=torch.bool, device=p_r.device)
    kl = (p_r * (torch.log(p_r + 1e-12) - lp_f_mean)).masked_fill(eye, 0.0).sum(-1)  # (40,)
    return kl.mean()


def uniformity_loss(emb: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log mean_{i != j} exp(-t ||e_i - e_j||^2) of normalized embeddings, per event; emb (B, N, D) -> scalar."""
    e = F.normalize(emb, dim=-1)
    d2 = torch.cdist(e, e).pow(2)  # (B, N, N)
    n = e.shape[1]
    off = ~torch.eye(n, dtype=torch.bool, device=e.device)
    return torch.log(torch.exp(-t * d2[:, off]).mean(-1) + 1e-12).mean()


@register("pxd-iea-gan")
class PxdIeaGan(EventImageFamily):
    config_cls = IeaGanConfig
    description = "IEA-GAN: sensor-conditioned generator with a transformer across the 40 sensors, hinge + intra-event loss, EMA"

    def build(self, cfg):
        return {"generator": IeaGenerator(cfg), "discriminator": IeaDiscriminator(cfg), **build_stats(cfg, N_SENSORS)}

    def optimizers(self, cfg, modules):
        betas = (cfg.beta1, cfg.beta2)
        return {"generator": torch.optim.Adam(generator_param_groups(modules["generator"], cfg.lr, cfg.event_factor_lr, cfg.offset_lr), betas=betas),
                "discriminator": torch.optim.Adam(modules["discriminator"].parameters(), lr=cfg.lr * cfg.d_lr_factor, betas=betas)}

    def latent_shape(self, cfg):
        return (N_SENSORS, cfg.latent_dim)

    def step(self, state, batch, step_idx):
        """``n_dis`` hinge-loss discriminator updates on events (B, 40, fr*fc, R, C), then one generator update."""
        cfg, G, D = state.cfg, state.modules["generator"], state.modules["discriminator"]
        dev = state.device

        def seen(x):  # what the discriminator sees (soft zero suppression, see PxdImageGanConfig)
            return soft_zero_suppress(x, cfg.threshold_adu, cfg.critic_sharpness)

        def raw_event(b):
            return G(torch.randn(b, N_SENSORS, cfg.latent_dim, device=dev), G.draw_noise(b, dev))

        def fake_event(b):
            return seen(raw_event(b))

        for i in range(cfg.n_dis):
            real = seen(batch if i == 0 else state.next_batch())
            with torch.no_grad():
                fake = fake_event(len(real))
            s_real, real_emb = D(real)
            s_fake, _ = D(fake)
            d_loss = F.relu(1.0 - s_real).mean() + F.relu(1.0 + s_fake).mean()
            state.update("discriminator", d_loss)
        raw = raw_event(len(batch))
        s_fake, fake_emb = D(seen(raw))
        hinge = -s_fake.mean()
        intra = intra_event_loss(real_emb.detach(), fake_emb, cfg.tau)
        unif = uniformity_loss(fake_emb)
        g_loss = hinge + cfg.lambda_intra * intra + cfg.lambda_unif * unif
        fm, logged = stats_loss(cfg, state.modules, raw, cfg.grid_factor)
        state.update("generator", g_loss if fm is None else g_loss + fm)
        return {"d_loss": d_loss.item(), "g_hinge": hinge.item(), "intra_kl": intra.item(), "unif": unif.item(), **logged}
