"""``ecl-gan``: the waveform GAN of seed 004 with a structured generator, one model for the whole ECL.

Recipe (seed 004 / REFERENCE.md): D:G updates 3:1; batch 128 (the discriminator sees 64 real +
64 generated waveforms per update, the generator 128 generated); 5 % of the labels flipped;
labels smoothed to U(0.7, 1.2) (real) and U(0, 0.3) (fake); binary cross-entropy; the best step
is selected by the lowest mean KS2 over the four metrics on a fixed validation subsample
(``--val``, :func:`b2bkg.ecl.metrics.make_validation_subset`).

Generator (:class:`~b2bkg.ecl.models.wavegen.WaveGenerator`): the structure of a random-trigger
ECL waveform with learned parts — per-crystal pedestal and noise factor, per-ring noise colouring
(31x31 lower-triangular), coherent noise and pile-up rates driven by an *event latent* shared by
all crystals of an event, pile-up photons (Poisson times over the window and a pre-window,
power-law amplitudes) rendered with a learned pulse kernel at sub-tick resolution. Every part is
first fitted from the ``--data`` file (``prepare``: moments and simulated moments, see
:func:`~b2bkg.ecl.models.wavegen.fit_generator`), then trained adversarially. Sampling all 8736
crystals of an event costs about as much as the covariance sampler.

Discriminator: judges each waveform, normalised by the crystal's fitted pedestal and noise level
(``y = 4 asinh(x / 4)``), with its ring (embedding) and explicit features (log variance, log
power spectrum, max - min, mean absolute deviation, first-difference rms), and judges *sets* of
``set_size`` crystals of one event (DeepSets pooling), so that event-level structure has a
gradient.

Shapes: waveforms (..., 31) ADC; ``crystal`` indices 0..8735 (cellId - 1); ``ring`` thetaId 0..68.

Example:
    $ b2bkg train ecl-gan --data train.h5 --val val.h5 --out runs/ecl-gan
    $ b2bkg generate --model runs/ecl-gan --events 100 --seed 1 --out gan.h5 [--keep-from data.h5]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from b2bkg.core.config import check_range
from b2bkg.ecl.geometry import N_RINGS
from b2bkg.training.registry import register
from b2bkg.training.sampling import event_generators

from .common import EclFamily, EclTrainConfig
from .data import N_SAMPLES, SetBatches, load_ecl_data
from .wavegen import WaveGenerator, fit_generator, latent_dims

__all__ = ["EclGanConfig", "Discriminator", "EclGan", "smoothed_labels", "waveform_features"]


@dataclass(frozen=True)
class EclGanConfig(EclTrainConfig):
    """``ecl-gan`` hyper-parameters (see the module docstring).

    Attributes:
        coherent_modes: event-level coherent-noise modes M; rate_factors: event-level pile-up
            rate factors K.
        pre_ticks: pulse-kernel length and pre-window, ticks; kernel_sub: kernel points per tick.
        a0_sigma: lowest pile-up amplitude, in units of the ring's noise rms (smaller photons are
            part of the coloured noise).
        photon_slots: candidate pile-up photons per crystal and window (the count is Binomial
            with mean lambda T; keep slots >> lambda T).
        fit_mc_per_ring: simulated waveforms per ring of the initial fit.
        ring_embed_dim: ring embedding size of D; d_channels: discriminator base channels.
        set_size: crystals of one event per discriminator set (divides batch_size / 2).
        n_critic: discriminator updates per generator update (seed: 3).
        label_flip: probability to swap a real and a fake target (seed: 0.05).
        real_label_lo/hi, fake_label_lo/hi: smoothed targets (seed: 0.7-1.2, 0-0.3).
        set_loss_weight: weight of the event-set terms of the losses.
        lr_g, lr_d, beta1, beta2: Adam.
        dropout: discriminator dropout.
    """

    batch_size: int = 128
    coherent_modes: int = 12
    rate_factors: int = 2
    pre_ticks: int = 24
    kernel_sub: int = 8
    a0_sigma: float = 0.5
    photon_slots: int = 6
    fit_mc_per_ring: int = 12000
    ring_embed_dim: int = 8
    d_channels: int = 32
    set_size: int = 8
    n_critic: int = 3
    label_flip: float = 0.05
    real_label_lo: float = 0.7
    real_label_hi: float = 1.2
    fake_label_lo: float = 0.0
    fake_label_hi: float = 0.3
    set_loss_weight: float = 1.0
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    dropout: float = 0.2

    @property
    def latent_dim(self) -> int:
        """Per-crystal latent ``z`` of the generator (:func:`.wavegen.latent_dims`)."""
        return latent_dims(self.photon_slots, self.coherent_modes, self.rate_factors)[0]

    @property
    def event_latent_dim(self) -> int:
        """Per-event latent ``e`` (:func:`.wavegen.latent_dims`)."""
        return latent_dims(self.photon_slots, self.coherent_modes, self.rate_factors)[1]

    def __post_init__(self):
        super().__post_init__()
        check_range("coherent_modes", self.coherent_modes, 0, 69)
        check_range("rate_factors", self.rate_factors, 0, 16)
        check_range("pre_ticks", self.pre_ticks, 4, 200, "ticks")
        check_range("kernel_sub", self.kernel_sub, 1, 64)
        check_range("a0_sigma", self.a0_sigma, 0.01, 100.0)
        check_range("photon_slots", self.photon_slots, 1, 256)
        check_range("fit_mc_per_ring", self.fit_mc_per_ring, 100, 10**6)
        check_range("ring_embed_dim", self.ring_embed_dim, 1, 256)
        check_range("d_channels", self.d_channels, 1, 1024)
        check_range("set_size", self.set_size, 1, 1024)
        check_range("n_critic", self.n_critic, 1, 100)
        check_range("label_flip", self.label_flip, 0.0, 0.5)
        check_range("real_label_lo", self.real_label_lo, 0.0, 2.0)
        check_range("real_label_hi", self.real_label_hi, self.real_label_lo, 2.0)
        check_range("fake_label_lo", self.fake_label_lo, -1.0, 1.0)
        check_range("fake_label_hi", self.fake_label_hi, self.fake_label_lo, 1.0)
        check_range("set_loss_weight", self.set_loss_weight, 0.0, 100.0)
        check_range("lr_g", self.lr_g, 0.0, 1.0)
        check_range("lr_d", self.lr_d, 0.0, 1.0)
        check_range("dropout", self.dropout, 0.0, 0.9)
        if (self.batch_size // 2) % self.set_size or self.batch_size % 2:
            from b2bkg.core.errors import ConfigError

            raise ConfigError(f"set_size: {self.set_size} must divide batch_size / 2 = {self.batch_size / 2:g} "
                              f"(batch_size {self.batch_size}: half real, half generated)")


N_FEATURES = 4 + 15


def waveform_features(w: torch.Tensor, g: WaveGenerator, crystal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ADC waveforms (..., 31) of ``crystal`` (...) -> (y (..., 31) compressed normalised waveform,
    features (..., 19): log variance, log(max - min), log mean |dev|, log first-difference rms,
    log power of the 15 non-DC DFT bins; all of x = (w - pedestal - base) / (sigma * scale))."""
    ring = g.ring[crystal]
    x = (w - g.pedestal[crystal][..., None] - g.base[ring]) / (g.sigma[ring] * g.scale[crystal])[..., None]
    y = 4.0 * torch.asinh(x / 4.0)
    dev = x - x.mean(-1, keepdim=True)
    eps = 1e-3
    feats = [
        torch.log(dev.pow(2).mean(-1) + eps),
        torch.log(x.max(-1).values - x.min(-1).values + eps),
        torch.log(dev.abs().mean(-1) + eps),
        torch.log(torch.diff(x, dim=-1).pow(2).mean(-1) + eps),
    ]
    p = torch.fft.rfft(x, dim=-1)[..., 1:16].abs().pow(2) / N_SAMPLES
    return y, torch.cat([torch.stack(feats, -1), torch.log(p + eps)], -1)


class Discriminator(nn.Module):
    """Judges waveforms and sets of waveforms of one event.

    forward(y (S, K, 31), features (S, K, 19), ring (S, K)) -> (per-waveform logits (S, K),
    per-set logits (S,)).
    """

    def __init__(self, cfg: EclGanConfig):
        super().__init__()
        c, f = cfg.d_channels, 2 * cfg.d_channels
        self.ring_emb = nn.Embedding(N_RINGS, cfg.ring_embed_dim)
        self.conv = nn.Sequential(
            nn.Conv1d(1, c, 5, padding=2), nn.LeakyReLU(0.2),
            nn.Conv1d(c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Dropout(cfg.dropout),  # 31 -> 15
            nn.Conv1d(2 * c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Dropout(cfg.dropout),  # 15 -> 7
        )
        self.feat = nn.Sequential(nn.Linear(2 * c * 7 + N_FEATURES + cfg.ring_embed_dim, f), nn.LeakyReLU(0.2),
                                  nn.Linear(f, f), nn.LeakyReLU(0.2))
        self.head = nn.Linear(f, 1)
        self.set_head = nn.Sequential(nn.Linear(2 * f, f), nn.LeakyReLU(0.2), nn.Linear(f, 1))

    def forward(self, y: torch.Tensor, feats: torch.Tensor, ring: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, k, n = y.shape
        h = self.conv(y.reshape(s * k, 1, n)).flatten(1)  # (S*K, 2c*7)
        h = self.feat(torch.cat([h, feats.reshape(s * k, -1), self.ring_emb(ring.reshape(-1))], dim=1))  # (S*K, f)
        logit = self.head(h).view(s, k)
        hs = h.view(s, k, -1)
        pooled = torch.cat([hs.mean(dim=1), hs.std(dim=1, unbiased=False) if k > 1 else torch.zeros_like(hs[:, 0])], dim=1)
        return logit, self.set_head(pooled)[:, 0]


def smoothed_labels(n_real: tuple, n_fake: tuple, cfg: EclGanConfig, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed-recipe targets: real U(real_lo, real_hi), fake U(fake_lo, fake_hi), with a fraction
    ``label_flip`` of each swapped to the other class's range (torch global RNG)."""
    def draw(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, device=device)

    t_real = draw(n_real, cfg.real_label_lo, cfg.real_label_hi)
    t_fake = draw(n_fake, cfg.fake_label_lo, cfg.fake_label_hi)
    if cfg.label_flip > 0:
        fr = torch.rand(n_real, device=device) < cfg.label_flip
        ff = torch.rand(n_fake, device=device) < cfg.label_flip
        t_real = torch.where(fr, draw(n_real, cfg.fake_label_lo, cfg.fake_label_hi), t_real)
        t_fake = torch.where(ff, draw(n_fake, cfg.real_label_lo, cfg.real_label_hi), t_fake)
    return t_real, t_fake


def _bce(logits, target):
    return F.binary_cross_entropy_with_logits(logits, target)


@register("ecl-gan")
class EclGan(EclFamily):
    config_cls = EclGanConfig
    description = "ECL waveform GAN (seed 004 recipe): structured generator (noise, pile-up, event latent)"

    def build(self, cfg):
        g = WaveGenerator(cfg.coherent_modes, cfg.rate_factors, cfg.pre_ticks, cfg.kernel_sub, cfg.a0_sigma, cfg.photon_slots)
        return {"generator": g, "discriminator": Discriminator(cfg)}

    def optimizers(self, cfg, modules):
        return {
            "generator": torch.optim.Adam(modules["generator"].parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2)),
            "discriminator": torch.optim.Adam(modules["discriminator"].parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2)),
        }

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        data = load_ecl_data(path, cfg.max_train_events)
        return SetBatches(data, cfg.set_size, cfg.batch_size // 2 // cfg.set_size, seed, rank, world_size)

    def prepare(self, cfg, modules, data):
        """Fit the generator from the training waveforms (a resumed checkpoint overrides it)."""
        g = modules["generator"]
        if not bool(g.initialized):
            fit_generator(g, data.data.waveforms, data.data.selected, seed=0, mc_per_ring=cfg.fit_mc_per_ring)

    def _judge(self, d, g, w, crystal):
        y, f = waveform_features(w, g, crystal)
        return d(y, f, g.ring[crystal])

    def step(self, state, batch, step_idx):
        cfg = state.cfg
        g, d = state.modules["generator"], state.modules["discriminator"]
        lam = cfg.set_loss_weight
        for i in range(cfg.n_critic):
            b = batch if i == 0 else state.next_batch()
            with torch.no_grad():
                w_fake = g.draw(b["crystal"])
            lr_, ls_r = self._judge(d, g, b["w"].float(), b["crystal"])
            lf_, ls_f = self._judge(d, g, w_fake, b["crystal"])
            t_r, t_f = smoothed_labels(lr_.shape, lf_.shape, cfg, state.device)
            ts_r, ts_f = smoothed_labels(ls_r.shape, ls_f.shape, cfg, state.device)
            d_loss = 0.5 * (_bce(lr_, t_r) + _bce(lf_, t_f)) + lam * 0.5 * (_bce(ls_r, ts_r) + _bce(ls_f, ts_f))
            state.update("discriminator", d_loss)
        # generator: batch_size generated waveforms (the crystals of two real batches)
        cr = torch.cat([batch["crystal"], b["crystal"]])
        lw, ls = self._judge(d, g, g.draw(cr), cr)
        g_loss = _bce(lw, torch.ones_like(lw)) + lam * _bce(ls, torch.ones_like(ls))
        state.update("generator", g_loss)
        with torch.no_grad():
            acc = 0.5 * ((lr_ > 0).float().mean() + (lf_ < 0).float().mean())
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "d_acc": acc.item()}

    # -- sampling ------------------------------------------------------------------------------
    def sample_events(self, modules, cfg, events, seed, device):
        g: WaveGenerator = modules["generator"]
        return torch.stack([g.sample_event(gen) for gen in event_generators(seed, events)])  # (B, 8736, 31)

    def sample_crystals(self, modules, cfg, crystals, n, gen):
        g: WaveGenerator = modules["generator"]
        w = g.draw(crystals[None, :].expand(n, -1), gen=gen)  # (n events, C, 31)
        return w.transpose(0, 1)  # (C, n, 31)
