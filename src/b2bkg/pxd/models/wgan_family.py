"""``pxd-wgan``: training and sampling of the WGAN-GP of seed 002 (Srebre et al., Table 1).

The networks are :class:`b2bkg.pxd.models.wgan.Generator` / :class:`~b2bkg.pxd.models.wgan.Critic`
(one sensor image per sample, 256 x 768 with rows 250..255 padding). Training as in the paper:
WGAN-GP (gradient penalty weight ``gp_lambda`` = 10), ``n_critic`` = 5 critic updates per generator
update, batch 40 images drawn at random over all (event, sensor) pairs of the training file, Adam
lr 1e-4 constant for the first half of the steps, then linearly to 0 (``lr_schedule: linear``,
``lr_decay_start: 0.5``). Images are built per batch from the sparse digits
(:class:`~b2bkg.pxd.models.pxd_data.SensorImageBatches`).

The model is not conditioned on the sensor: an event is 40 independent draws (no sensor-to-sensor
correlation and one occupancy spectrum for all sensors, the paper's model). ``small`` keeps the
same generator/critic topology (Dense, blocks of Conv + BN + ReLU + 2x upsampling; stride-2 critic
convolutions and global max pooling) on the 32 x 96 space-to-depth grid (``grid_factor: [8, 8]``,
64 output channels = the pixels of each 8 x 8 cell, shuffled back to 256 x 768 exactly, see
:mod:`b2bkg.pxd.models.pxd_data`), so it trains ~40x cheaper than at full resolution; a config whose
blocks end on a grid coarser than its internal grid is resized to it before the output
convolution (``WganConfig.final_upsample``). Output is always full-resolution 250 x 768 digits.
The small config adds the event-statistics matching of :mod:`b2bkg.pxd.models.gan_stats` with one
group (all sensors pooled: mean occupancy, per-image occupancy spread, charge spectrum).

Example:
    $ b2bkg train pxd-wgan --data train.h5 --val val.h5 --out runs/wgan --config small
    $ b2bkg generate --model runs/wgan --events 100 --seed 2 --out wgan.h5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from b2bkg.core.config import check_range
from b2bkg.io.events import N_SENSORS
from b2bkg.training.registry import Family, register
from b2bkg.training.sampling import event_normal

from .gan_stats import build_stats, calibrate_offsets, digits_level_fractions, prepare_stats, stats_loss
from .pxd_data import PxdImageGanConfig, SensorImageBatches, images_to_digits, load_digits, validate_digits, wgan_gp_step
from .wgan import Critic, Generator, WganConfig

__all__ = ["PxdWganConfig", "PxdWgan"]


@dataclass(frozen=True)
class PxdWganConfig(PxdImageGanConfig):
    """``pxd-wgan`` training config; network fields are those of :class:`WganConfig` (defaults: the paper).

    Attributes:
        n_critic: critic updates per generator update (paper: 5).
        gp_lambda: gradient-penalty weight (paper: 10).
        sensor_micro_batch: images per generator forward when sampling (memory bound at full size).
    """

    batch_size: int = 40
    lr_schedule: Literal["constant", "linear"] = "linear"
    lr_decay_start: float = 0.5
    val_events: int = 10
    latent_dim: int = 96
    base_grid: tuple[int, ...] = (8, 24)
    channels: tuple[int, ...] = (512, 256, 128, 64, 32)
    kernel: int = 5
    critic_channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    upsample: Literal["nearest", "bilinear"] = "nearest"
    final_upsample: Literal["nearest", "bilinear"] = "bilinear"
    leaky_slope: float = 0.2
    n_critic: int = 5
    gp_lambda: float = 10.0
    sensor_micro_batch: int = 8

    def __post_init__(self):
        super().__post_init__()
        check_range("n_critic", self.n_critic, 1, 100)
        check_range("gp_lambda", self.gp_lambda, 0.0, None)
        check_range("sensor_micro_batch", self.sensor_micro_batch, 1, 4096)
        self.net  # validates the network sizes

    @property
    def net(self) -> WganConfig:
        """The :class:`WganConfig` of the two networks."""
        return WganConfig(latent_dim=self.latent_dim, base_grid=tuple(self.base_grid), channels=tuple(self.channels),
                          kernel=self.kernel, critic_channels=tuple(self.critic_channels), upsample=self.upsample,
                          final_upsample=self.final_upsample, leaky_slope=self.leaky_slope, grid_factor=tuple(self.grid_factor))


@register("pxd-wgan")
class PxdWgan(Family):
    config_cls = PxdWganConfig
    outputs = ("pxd",)
    generate_batch_size = 1
    description = "WGAN-GP of seed 002 (Table 1): one sensor image per sample, 40 independent images per event"

    def build(self, cfg):
        g, d = Generator(cfg.net), Critic(cfg.net)
        if cfg.out_bias_init:
            with torch.no_grad():
                g.out.bias.fill_(cfg.out_bias_init)
        return {"generator": g, "critic": d, **build_stats(cfg, 1)}

    def optimizers(self, cfg, modules):
        return {k: torch.optim.Adam(modules[k].parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)) for k in ("generator", "critic")}

    def prepare(self, cfg, modules, data):
        prepare_stats(cfg, modules, data.digits)
        if cfg.init_occupancy:  # one offset for all sensors, folded into the output convolution's bias
            G = modules["generator"]
            with torch.no_grad():
                gen = torch.Generator().manual_seed(0)
                feats = G.features(torch.randn(16, cfg.latent_dim, generator=gen).to(G.out.bias.device))
                c = torch.zeros(1, device=feats.device)
                target = torch.as_tensor(digits_level_fractions(data.digits, (cfg.threshold_adu,))[..., 0].mean(), dtype=torch.float32)
                calibrate_offsets(lambda: torch.tanh(G.out(feats) + c)[:, None], c, target[None], cfg.grid_factor, cfg.threshold_adu)
                G.out.bias += c

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        return SensorImageBatches(load_digits(path, cfg.max_train_events), cfg.batch_size, seed, cfg.grid_factor, rank, world_size)

    def step(self, state, batch, step_idx):
        """``n_critic`` WGAN-GP critic updates on (B, fr*fc, 256/fr, 768/fc) batches, then one generator update."""
        cfg, G, dev = state.cfg, state.modules["generator"], state.device
        return wgan_gp_step(state, batch, lambda b: b["x"], lambda n: G(torch.randn(n, cfg.latent_dim, device=dev)),
                            lambda fake: stats_loss(cfg, state.modules, fake[:, None], cfg.grid_factor))  # one group

    def load_val(self, cfg, path):
        return load_digits(path, cfg.val_events)

    def validate(self, modules, cfg, val_data, seed):
        dev = next(modules["generator"].parameters()).device
        gen = self.sample(modules, cfg, np.arange(cfg.val_events), seed, dev)["pxd"]
        return validate_digits(gen, val_data)

    @torch.no_grad()
    def sample(self, modules, cfg, events, seed, device, conditions=None, keep=None):
        """Event ``i`` = 40 images from the 40 latents ``event_normal(seed, i)`` of shape (40, latent_dim)."""
        G = modules["generator"]
        z = event_normal(seed, events, (N_SENSORS, cfg.latent_dim), device).view(-1, cfg.latent_dim)  # (E*40, latent)
        mb = cfg.sensor_micro_batch
        x = torch.cat([G(z[i:i + mb]) for i in range(0, len(z), mb)]) if len(z) else z.new_zeros(0, cfg.cell_channels, *cfg.grid)
        return {"pxd": images_to_digits(x.view(len(events), N_SENSORS, *x.shape[1:]), cfg.grid_factor, cfg.threshold_adu)}
