"""What the three ECL families share: config fields, validation on a fixed subsample, and event
generation with the hybrid ``--keep-from``.

A family derives from :class:`EclFamily` and provides
  * ``sample_events(modules, cfg, events, seed, device) -> (B, 8736, 31)`` float ADC, drawing
    event ``i``'s randomness only from ``torch_generator(seed, "generate", i)``;
  * ``sample_crystals(modules, cfg, crystals, n, gen) -> (C, n, 31)`` float ADC for validation
    (``n`` independent events of the crystals ``crystals``, randomness from ``gen``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from b2bkg.core.config import check_range
from b2bkg.ecl.metrics import ks2_per_crystal
from b2bkg.io.events import EclWaveforms
from b2bkg.training.registry import Family, TrainConfig

from .data import load_validation, to_adc

__all__ = ["EclTrainConfig", "EclFamily"]


@dataclass(frozen=True)
class EclTrainConfig(TrainConfig):
    """Data knobs shared by the ECL models.

    Attributes:
        max_train_events: events of ``--data`` used (0 = all); 1 event = 8736 waveforms, 1 MB.
        val_events: waveforms per crystal of the validation subsample (events of ``--val``).
        val_crystals: crystals of the validation subsample (stratified in theta).
    """

    max_train_events: int = 300
    val_events: int = 500
    val_crystals: int = 64

    def __post_init__(self):
        super().__post_init__()
        check_range("max_train_events", self.max_train_events, 0, None)
        check_range("val_crystals", self.val_crystals, 1, 8736)
        check_range("val_events", self.val_events, 2, None)


class EclFamily(Family):
    """Base of ``ecl-gan``, ``ecl-ae``, ``ecl-cov`` (not registered itself)."""

    outputs = ("ecl",)
    supports_keep = True
    generate_batch_size = 8

    # -- to provide --------------------------------------------------------------------------
    def sample_events(self, modules, cfg, events, seed: int, device) -> torch.Tensor:
        raise NotImplementedError

    def sample_crystals(self, modules, cfg, crystals: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    # -- validation ----------------------------------------------------------------------------
    def load_val(self, cfg, path):
        return load_validation(path, cfg.val_events, cfg.val_crystals)

    def validate(self, modules, cfg, val_data, seed):
        """Mean KS2 over the four metrics (and each metric) of generated vs held-out waveforms of
        the fixed subsample (``val_crystals`` crystals x ``val_events`` waveforms)."""
        gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
        crystals = torch.as_tensor(val_data.crystals, dtype=torch.int64)
        fake = self.sample_crystals(modules, cfg, crystals, val_data.waveforms.shape[1], gen)  # (C, n, 31)
        fake = np.rint(fake.double().cpu().numpy())
        ks = ks2_per_crystal(val_data.waveforms, fake)
        out = {"ks2": float(np.nanmean(ks["mean"]))}
        out.update({f"ks2_{k}": float(np.nanmean(v)) for k, v in ks.items() if k != "mean"})
        return out

    # -- generation ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, modules, cfg, events, seed, device, conditions=None, keep=None):
        """Events ``events`` -> ``{"ecl": EclWaveforms}``; with ``keep`` (``{"ecl": EclWaveforms}``
        of the same events) the seed's selected waveforms of those events are kept exactly."""
        w = to_adc(self.sample_events(modules, cfg, np.asarray(events, dtype=np.int64), seed, device))
        if keep is not None:
            from b2bkg.ecl.select import hybrid, select_waveforms

            k = keep["ecl"]
            return {"ecl": hybrid(k, EclWaveforms(w), select_waveforms(k.waveforms))}
        return {"ecl": EclWaveforms(w)}
