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
same topology (five blocks from 8 x 24 to 256 x 768) with ~1/32 of the channels, 3x3 kernels and
batch 16; a config whose blocks end on a coarser grid is resized to 256 x 768 before the output
convolution (``WganConfig.final_upsample``): output is always full resolution.

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
from b2bkg.core.errors import ConfigError
from b2bkg.io.events import N_SENSORS
from b2bkg.training.registry import Family, register
from b2bkg.training.sampling import event_normal

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
        if tuple(self.grid_factor) != (1, 1):
            raise ConfigError(f"grid_factor: {tuple(self.grid_factor)}; pxd-wgan's networks work at full resolution, use (1, 1)")
        check_range("n_critic", self.n_critic, 1, 100)
        check_range("gp_lambda", self.gp_lambda, 0.0, None)
        check_range("sensor_micro_batch", self.sensor_micro_batch, 1, 4096)
        self.net  # validates the network sizes

    @property
    def net(self) -> WganConfig:
        """The :class:`WganConfig` of the two networks."""
        return WganConfig(latent_dim=self.latent_dim, base_grid=tuple(self.base_grid), channels=tuple(self.channels),
                          kernel=self.kernel, critic_channels=tuple(self.critic_channels), upsample=self.upsample,
                          final_upsample=self.final_upsample, leaky_slope=self.leaky_slope)


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
        return {"generator": g, "critic": d}

    def optimizers(self, cfg, modules):
        return {k: torch.optim.Adam(m.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)) for k, m in modules.items()}

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        return SensorImageBatches(load_digits(path, cfg.max_train_events), cfg.batch_size, seed, (1, 1), rank, world_size)

    def step(self, state, batch, step_idx):
        """``n_critic`` WGAN-GP critic updates on (B, 1, 256, 768) batches, then one generator update."""
        cfg, G, dev = state.cfg, state.modules["generator"], state.device
        return wgan_gp_step(state, batch, lambda b: b["x"], lambda n: G(torch.randn(n, cfg.latent_dim, device=dev)))

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
        x = torch.cat([G(z[i:i + mb]) for i in range(0, len(z), mb)]) if len(z) else z.new_zeros(0, 1, 256, 768)
        return {"pxd": images_to_digits(x.view(len(events), N_SENSORS, *x.shape[1:]), (1, 1), cfg.threshold_adu)}
