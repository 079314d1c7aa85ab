"""Networks of the PXD WGAN-GP of seed 002 (Srebre et al., Table 1): generator and critic.

Table 1 of the paper (features, kernel, stride, padding)::

    critic  x in R^{256x768}                 generator  z in R^96 ~ N(0, I)
            Conv(32, 5, 2, 2), LeakyReLU                Dense -> 512 x 8 x 24
            Conv(64, 5, 2, 2), LeakyReLU                Conv(512, 5, 1, 2), BN, ReLU, Upsample
            Conv(128, 5, 2, 2), LeakyReLU               Conv(256, 5, 1, 2), BN, ReLU, Upsample
            Conv(256, 5, 2, 2), LeakyReLU               Conv(128, 5, 1, 2), BN, ReLU, Upsample
            Conv(512, 5, 2, 2), LeakyReLU               Conv(64, 5, 1, 2), BN, ReLU, Upsample
            Global Max Pooling                          Conv(32, 5, 1, 2), BN, ReLU, Upsample
            Dense -> 1                                  Conv(1, 5, 1, 2), Tanh

One image is one sensor: 250 u-rows padded to 256 (see :mod:`b2bkg.pxd.images`), 768 v-columns,
values in [-1, 1]. The paper config has 20.44 M generator parameters (81.8 MB in float32), the
"20 million parameters ... 80 MB" of the paper. Choices the paper leaves open (documented,
free to change): upsampling is nearest-neighbour 2x (Keras ``UpSampling2D`` default), the Dense
layer has no activation, LeakyReLU slope 0.2.

The modules are forward-only: no optimizer, no I/O, no sampling loop (the trainer and the
sampler own those).

Example:
    >>> import torch
    >>> cfg = WganConfig.small()
    >>> g, d = Generator(cfg), Critic(cfg)
    >>> x = g(torch.randn(2, cfg.latent_dim))
    >>> tuple(x.shape), tuple(d(x).shape)
    ((2, 1, 256, 768), (2, 1))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
import torch.nn.functional as F

from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError
from b2bkg.io.events import N_UCELLS, N_VCELLS

__all__ = ["WganConfig", "Generator", "Critic", "count_parameters"]


@dataclass(frozen=True)
class WganConfig:
    """Sizes of the WGAN-GP networks. Defaults = the paper (Table 1 of seed 002).

    Attributes:
        latent_dim: dimension of z ~ N(0, I).
        base_grid: (rows, cols) of the Dense output feature map.
        channels: output channels of the generator blocks; each block is
            Conv(k, stride 1, pad k//2) + BatchNorm + ReLU + 2x upsampling.
        kernel: convolution kernel size (odd) of generator and critic.
        critic_channels: channels of the critic's Conv(k, stride 2, pad k//2) + LeakyReLU layers.
        image_rows, image_cols: padded output image, 256 x 768 (250 sensor rows + 6 padding rows).
        upsample: interpolation of the 2x block upsampling.
        final_upsample: interpolation used when the blocks end on a grid coarser than the image
            (``base_grid * 2**len(channels)`` smaller than ``image_rows x image_cols``): the last
            feature map is resized to the full image before the output convolution, so the output
            is always full resolution. Unused in the paper config (8x24 * 32 = 256x768).
        leaky_slope: negative slope of the critic's LeakyReLU.
        grid_factor: (fr, fc) space-to-depth block of the internal grid
            (:mod:`b2bkg.pxd.models.pxd_data`): the generator ends on the (image_rows/fr, image_cols/fc)
            grid with fr*fc output channels (the pixels of each cell, shuffled back to the full image
            exactly by ``depth_to_space``) and the critic reads that layout. (1, 1) = the paper (one
            channel at full resolution).
    """

    latent_dim: int = 96
    base_grid: tuple[int, ...] = (8, 24)
    channels: tuple[int, ...] = (512, 256, 128, 64, 32)
    kernel: int = 5
    critic_channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    image_rows: int = 256
    image_cols: int = 768
    upsample: Literal["nearest", "bilinear"] = "nearest"
    final_upsample: Literal["nearest", "bilinear"] = "bilinear"
    leaky_slope: float = 0.2
    grid_factor: tuple[int, ...] = (1, 1)

    def __post_init__(self):
        check_range("latent_dim", self.latent_dim, 1, None)
        check_range("kernel", self.kernel, 1, 15)
        if self.kernel % 2 == 0:
            raise ConfigError(f"kernel: {self.kernel} must be odd (padding kernel//2 keeps the size)")
        if len(self.base_grid) != 2 or min(self.base_grid) < 1:
            raise ConfigError(f"base_grid: {self.base_grid} must be two positive integers (rows, cols)")
        if not self.channels or min(self.channels) < 1:
            raise ConfigError(f"channels: {self.channels} must be a non-empty list of positive integers")
        if not self.critic_channels or min(self.critic_channels) < 1:
            raise ConfigError(f"critic_channels: {self.critic_channels} must be a non-empty list of positive integers")
        check_range("image_rows", self.image_rows, N_UCELLS, None, "rows")
        check_range("image_cols", self.image_cols, N_VCELLS, N_VCELLS, "columns")
        check_range("leaky_slope", self.leaky_slope, 0.0, 1.0)
        if len(self.grid_factor) != 2 or min(self.grid_factor) < 1 or self.image_rows % self.grid_factor[0] or self.image_cols % self.grid_factor[1]:
            raise ConfigError(f"grid_factor: {tuple(self.grid_factor)} must be two positive integers dividing "
                              f"({self.image_rows}, {self.image_cols})")
        r, c = self.block_grid
        if r > self.grid[0] or c > self.grid[1]:
            raise ConfigError(
                f"base_grid {self.base_grid} x 2^{len(self.channels)} = ({r}, {c}) exceeds the image grid {self.grid} "
                f"(grid_factor {tuple(self.grid_factor)}); use a smaller base_grid or fewer channels")

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the generator output / critic input: the image divided by ``grid_factor``."""
        return self.image_rows // self.grid_factor[0], self.image_cols // self.grid_factor[1]

    @property
    def cell_channels(self) -> int:
        """Channels of the generator output / critic input: fr * fc (1 at full resolution)."""
        return self.grid_factor[0] * self.grid_factor[1]

    @property
    def block_grid(self) -> tuple[int, int]:
        """(rows, cols) after the generator blocks: base_grid * 2**len(channels)."""
        f = 2 ** len(self.channels)
        return self.base_grid[0] * f, self.base_grid[1] * f

    @classmethod
    def paper(cls) -> "WganConfig":
        """Table 1 of seed 002 (20.4 M generator parameters)."""
        return cls()

    @classmethod
    def small(cls, coarse: bool = False) -> "WganConfig":
        """CPU-sized variant: ~1/16 of the channels; ``coarse=True`` stops the blocks at 128 x 384
        and resizes the last feature map (bilinear) to 256 x 768 before the output convolution."""
        if coarse:
            return cls(channels=(64, 32, 16, 16), critic_channels=(8, 16, 32, 64, 128))
        return cls(channels=(64, 32, 16, 16, 8), critic_channels=(8, 16, 32, 64, 128))


class Generator(nn.Module):
    """z -> one padded sensor image.

    ``forward(z)``: z of shape (B, latent_dim) -> images of shape (B, fr*fc, image_rows/fr, image_cols/fc)
    (paper: (B, 1, 256, 768)), tanh output in [-1, 1]; a coarse ``grid_factor`` output goes back to
    (B, 1, 256, 768) with :func:`b2bkg.pxd.models.pxd_data.depth_to_space`. Crop rows 250..255 with
    :func:`b2bkg.pxd.images.crop_rows`; map to ADU with :func:`b2bkg.pxd.images.to_adu`.
    """

    def __init__(self, cfg: WganConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or WganConfig()
        c0 = cfg.channels[0]
        self.dense = nn.Linear(cfg.latent_dim, c0 * cfg.base_grid[0] * cfg.base_grid[1])
        pad = cfg.kernel // 2
        blocks = []
        c_in = c0
        for c in cfg.channels:
            blocks += [
                nn.Conv2d(c_in, c, cfg.kernel, stride=1, padding=pad),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Upsample(scale_factor=2, mode=cfg.upsample),
            ]
            c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Conv2d(c_in, cfg.cell_channels, cfg.kernel, stride=1, padding=pad)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, latent_dim) -> last feature map on the internal grid, (B, C_last, *cfg.grid)."""
        cfg = self.cfg
        h = self.dense(z).view(z.shape[0], cfg.channels[0], *cfg.base_grid)  # (B, C0, 8, 24)
        h = self.blocks(h)  # (B, C_last, 8*2^n, 24*2^n) = (B, 32, 256, 768) in the paper config
        if h.shape[-2:] != cfg.grid:
            h = F.interpolate(h, size=cfg.grid, mode=cfg.final_upsample,
                              **({} if cfg.final_upsample == "nearest" else {"align_corners": False}))
        return h

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, latent_dim) float -> (B, fr*fc, *cfg.grid) in [-1, 1]."""
        return torch.tanh(self.out(self.features(z)))  # (B, 1, 256, 768) in the paper config


class Critic(nn.Module):
    """Padded sensor image -> unbounded WGAN score.

    ``forward(x)``: x of shape (B, fr*fc, *cfg.grid) in [-1, 1] (paper: (B, 1, 256, 768)) -> (B, 1).
    Five Conv(k, stride 2, pad k//2) + LeakyReLU (paper: 256x768 -> 8x24), global max pooling over
    the remaining grid, Dense -> 1. No normalization layers (the gradient penalty is per sample).
    """

    def __init__(self, cfg: WganConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or WganConfig()
        layers = []
        c_in = cfg.cell_channels
        for c in cfg.critic_channels:
            layers += [nn.Conv2d(c_in, c, cfg.kernel, stride=2, padding=cfg.kernel // 2), nn.LeakyReLU(cfg.leaky_slope)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, H, W) -> (B, 1)."""
        h = self.features(x)  # (B, 512, 8, 24) in the paper config
        h = torch.amax(h, dim=(-2, -1))  # global max pooling -> (B, 512)
        return self.head(h)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; BatchNorm running statistics are buffers, not counted."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
