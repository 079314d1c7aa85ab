"""Shared ECL data pipeline of the waveform models: load, exclude the selected waveforms, fit the
per-crystal normalisation, serve training batches and the validation subsample.

Everything a model knows about the detector comes from its ``--data`` file: the per-crystal
pedestal, the per-ring mean waveform shape and the per-crystal noise level are *fitted* here
(:func:`fit_normalization`); no model imports the simulator or the detector payload
(:mod:`b2bkg.ecl.simulate`, :mod:`b2bkg.ecl.detector`). Crystal geometry (ring of a crystal) and
the seed's selection (:func:`b2bkg.ecl.select.select_waveforms`, a template fit) are used.

Normalised space of the neural models (per crystal ``c`` of ring ``r(c)``, sample ``t``)::

    x[c, t] = (w[c, t] - pedestal[c] - ring_shape[r(c), t]) / noise_sd[c]      (ADC -> O(1))
    y[c, t] = tail * asinh(x[c, t] / tail)                                     (compress pulses)

``pedestal`` (8736,) ADC is the mean of the crystal's non-selected samples, ``ring_shape`` (69, 31)
ADC the ring's mean waveform around the pedestal (the baseline pattern and the mean pile-up
shape), ``noise_sd`` (8736,) ADC a robust (median absolute deviation) per-crystal noise level.
The asinh keeps noise (|x| < tail) linear and tames the pile-up pulses (x up to ~60).

Example:
    >>> norm = WaveformNorm()                                 # empty buffers, filled by fit
    >>> norm.load_stats(fit_normalization(np.full((2, 8736, 31), 3000, np.int32)))
    >>> float(norm.pedestal[0])
    3000.0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from b2bkg.core.errors import ConfigError
from b2bkg.core.progress import progress
from b2bkg.core.seeding import stream_rng
from b2bkg.ecl.geometry import N_CRYSTALS, N_RINGS, RING_SIZES, RING_START, crystal_theta_id
from b2bkg.ecl.metrics import ValidationSubset, make_validation_subset
from b2bkg.ecl.select import select_waveforms
from b2bkg.training.data import ArrayBatches, WrappedBatches

__all__ = [
    "N_SAMPLES",
    "EclData",
    "load_ecl_data",
    "fit_normalization",
    "WaveformNorm",
    "SetBatches",
    "load_validation",
    "ring_blocks",
    "to_adc",
]

N_SAMPLES = 31
_MAD_TO_SD = 1.4826


@dataclass
class EclData:
    """Waveforms of a data file held in memory with their selection mask.

    Attributes:
        waveforms: (n_events, 8736, 31) int32 ADC.
        selected: (n_events, 8736) bool, True for the seed's "interesting" waveforms (excluded
            from training and from the fitted statistics).
        path: the file read.
    """

    waveforms: np.ndarray
    selected: np.ndarray
    path: str = "<memory>"

    @property
    def n_events(self) -> int:
        return len(self.waveforms)


def load_ecl_data(path: str | Path, max_events: int = 0, chunk: int = 25, select: bool = True) -> EclData:
    """Read the ``ecl`` group of ``path`` (first ``max_events`` events, 0 = all) and select.

    Raises ConfigError (one line naming the file) when the file has no ``ecl`` group.
    """
    from b2bkg.io import open_file

    with open_file(path) as f:
        if "ecl" not in f.groups:
            raise ConfigError(f"--data {path}: no 'ecl' group (has: {', '.join(f.groups) or 'none'}); ECL models need ECL waveforms")
        n = f.n_events if max_events <= 0 else min(max_events, f.n_events)
        if n < 1:
            raise ConfigError(f"--data {path}: holds no events")
        w = np.empty((n, N_CRYSTALS, N_SAMPLES), dtype=np.int32)
        sel = np.zeros((n, N_CRYSTALS), dtype=bool)
        bar = progress(total=n, desc="load+select ecl", unit="event")
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            w[s:e] = f.read_ecl(s, e).waveforms
            if select:
                sel[s:e] = select_waveforms(w[s:e])
            bar.update(e - s)
        bar.close()
    return EclData(w, sel, str(path))


def _ring_of_crystal() -> np.ndarray:
    """thetaId (ring) of every crystal, (8736,) int64, a writable copy."""
    return np.array(crystal_theta_id(), dtype=np.int64)


def fit_normalization(waveforms: np.ndarray, selected: np.ndarray | None = None, crystal_chunk: int = 1092) -> dict[str, np.ndarray]:
    """Per-crystal pedestal and noise level and per-ring mean shape from non-selected waveforms.

    Args:
        waveforms: (n_events, 8736, 31) ADC.
        selected: optional (n_events, 8736) bool; those waveforms are ignored.
    Returns:
        dict of float32 arrays: ``pedestal`` (8736,) ADC, ``ring_shape`` (69, 31) ADC (mean over
        samples 0 in each ring), ``noise_sd`` (8736,) ADC, ``count`` (8736,) waveforms used.
    Crystals without any usable waveform get their ring's averages.
    """
    w = np.asarray(waveforms)
    n = len(w)
    keep = np.ones((n, N_CRYSTALS), bool) if selected is None else ~np.asarray(selected, bool)
    ring = _ring_of_crystal()
    ped = np.zeros(N_CRYSTALS)
    sd = np.zeros(N_CRYSTALS)
    mean_wave = np.zeros((N_CRYSTALS, N_SAMPLES))  # per crystal mean waveform (ADC)
    count = keep.sum(axis=0)
    for c0 in range(0, N_CRYSTALS, crystal_chunk):  # chunks of crystals bound the memory
        c1 = min(N_CRYSTALS, c0 + crystal_chunk)
        x = w[:, c0:c1, :].astype(np.float64)  # (n, C, 31)
        k = keep[:, c0:c1]
        kk = k[..., None]
        mean_wave[c0:c1] = np.where(kk, x, 0.0).sum(axis=0) / np.maximum(count[c0:c1], 1)[:, None]
        d = np.abs(x - np.median(x, axis=2, keepdims=True))  # deviation from the waveform's median
        d = np.where(kk, d, np.nan).transpose(1, 0, 2).reshape(c1 - c0, -1)  # (C, n*31)
        with np.errstate(all="ignore"):
            sd[c0:c1] = _MAD_TO_SD * np.nanmedian(d, axis=1) if d.shape[1] else np.nan
    ped = mean_wave.mean(axis=1)
    good = count > 0
    # ring averages: mean shape around the pedestal, fall-back pedestal and noise level
    wsum = np.bincount(ring[good], weights=np.ones(good.sum()), minlength=N_RINGS)
    shape = np.zeros((N_RINGS, N_SAMPLES))
    for t in range(N_SAMPLES):  # 31 bincounts over crystals
        shape[:, t] = np.bincount(ring[good], weights=(mean_wave[good, t] - ped[good]), minlength=N_RINGS)
    shape /= np.maximum(wsum, 1)[:, None]
    ring_ped = np.bincount(ring[good], weights=ped[good], minlength=N_RINGS) / np.maximum(wsum, 1)
    sd_ok = good & np.isfinite(sd) & (sd > 0)
    ring_sd = np.bincount(ring[sd_ok], weights=sd[sd_ok], minlength=N_RINGS) / np.maximum(np.bincount(ring[sd_ok], minlength=N_RINGS), 1)
    ped = np.where(good, ped, ring_ped[ring])
    sd = np.where(sd_ok, sd, ring_sd[ring])
    sd = np.where(sd > 0, sd, 1.0)
    return {
        "pedestal": ped.astype(np.float32),
        "ring_shape": shape.astype(np.float32),
        "noise_sd": sd.astype(np.float32),
        "count": count.astype(np.float32),
    }


class WaveformNorm(nn.Module):
    """Fitted per-crystal normalisation (buffers, saved with the weights).

    Buffers: ``pedestal`` (8736,) ADC, ``ring_shape`` (69, 31) ADC, ``noise_sd`` (8736,) ADC,
    ``ring`` (8736,) int64 thetaId of each crystal (geometry, not fitted).
    """

    def __init__(self, tail: float = 4.0):
        super().__init__()
        self.tail = float(tail)
        self.register_buffer("pedestal", torch.full((N_CRYSTALS,), 3000.0))
        self.register_buffer("ring_shape", torch.zeros(N_RINGS, N_SAMPLES))
        self.register_buffer("noise_sd", torch.ones(N_CRYSTALS))
        self.register_buffer("ring", torch.as_tensor(_ring_of_crystal(), dtype=torch.int64), persistent=False)

    def load_stats(self, stats: dict[str, np.ndarray]) -> None:
        """Fill the buffers from :func:`fit_normalization`."""
        with torch.no_grad():
            for k in ("pedestal", "ring_shape", "noise_sd"):
                getattr(self, k).copy_(torch.as_tensor(stats[k]))

    def normalize(self, w: torch.Tensor, crystal: torch.Tensor) -> torch.Tensor:
        """ADC waveforms (..., 31) of crystals ``crystal`` (...) int64 -> y (..., 31) float32."""
        x = (w.float() - self.pedestal[crystal][..., None] - self.ring_shape[self.ring[crystal]]) / self.noise_sd[crystal][..., None]
        return self.tail * torch.asinh(x / self.tail) if self.tail > 0 else x

    def denormalize(self, y: torch.Tensor, crystal: torch.Tensor | None = None) -> torch.Tensor:
        """y (..., C, 31) -> ADC float (..., C, 31); ``crystal`` (C,) indices (None: all 8736)."""
        x = self.tail * torch.sinh(y / self.tail) if self.tail > 0 else y
        if crystal is None:
            return x * self.noise_sd[:, None] + (self.pedestal[:, None] + self.ring_shape[self.ring])
        return x * self.noise_sd[crystal][:, None] + (self.pedestal[crystal][:, None] + self.ring_shape[self.ring[crystal]])


def to_adc(w: torch.Tensor) -> np.ndarray:
    """Float ADC tensor -> int32 numpy, rounded and clipped to the 18-bit range."""
    return torch.clamp(torch.round(w), 0, 2**18 - 1).to(torch.int32).cpu().numpy()


def ring_blocks() -> list[tuple[int, int, int, int]]:
    """Runs of consecutive rings of equal size: ``(first_ring, n_rings, ring_size, first_crystal)``.

    Crystals are stored ring by ring, so each run is a contiguous block of crystals that reshapes
    to (n_rings, ring_size, ...) for batched per-ring matrix products (6 blocks for the ECL).
    """
    out = []
    r = 0
    while r < N_RINGS:
        s = r
        while r + 1 < N_RINGS and RING_SIZES[r + 1] == RING_SIZES[s]:
            r += 1
        out.append((s, r - s + 1, int(RING_SIZES[s]), int(RING_START[s])))
        r += 1
    return out


class SetBatches(WrappedBatches):
    """Training batches of *sets*: ``set_size`` non-selected crystals of one event.

    Each event's non-selected crystals are shuffled once (``stream_rng(seed, "ecl.sets")``) and
    cut into sets; the sets are served by :class:`b2bkg.training.data.ArrayBatches` (shuffled,
    DDP-sharded, resumable). A batch is a dict: ``w`` (S, set_size, 31) int32 ADC, ``crystal``
    (S, set_size) int64, ``event`` (S,) int64 — S = ``sets_per_batch`` / world_size.
    """

    def __init__(self, data: EclData, set_size: int, sets_per_batch: int, seed: int, rank: int = 0, world_size: int = 1):
        self.data = data
        rng = stream_rng(seed, "ecl.sets")
        ev_list, cr_list = [], []
        for e in range(data.n_events):  # one permutation per event
            cr = np.flatnonzero(~data.selected[e])
            cr = rng.permutation(cr)
            m = (len(cr) // set_size) * set_size
            cr_list.append(cr[:m].reshape(-1, set_size))
            ev_list.append(np.full(m // set_size, e, dtype=np.int64))
        self.crystals = np.concatenate(cr_list).astype(np.int64)  # (n_sets, K)
        self.events = np.concatenate(ev_list)  # (n_sets,)
        self._b = ArrayBatches(np.arange(len(self.events)), sets_per_batch, seed, rank, world_size, transform=self._gather)

    def _gather(self, idx: torch.Tensor) -> dict:
        i = idx.numpy()
        ev, cr = self.events[i], self.crystals[i]
        w = self.data.waveforms[ev[:, None], cr]  # (S, K, 31)
        return {"w": torch.from_numpy(w), "crystal": torch.from_numpy(cr), "event": torch.from_numpy(ev)}

    def __len__(self) -> int:
        return len(self.events)



def load_validation(path: str | Path, n_events: int, n_crystals: int, seed: int = 0) -> ValidationSubset:
    """Fixed validation subsample of a held-out file: ``n_crystals`` crystals (stratified in
    theta) x up to ``n_events`` events, selected waveforms NaN (see
    :func:`b2bkg.ecl.metrics.make_validation_subset`)."""
    d = load_ecl_data(path, max_events=n_events)
    return make_validation_subset(d.waveforms, n_crystals=n_crystals, n_waveforms=d.n_events, seed=seed, mask=d.selected)
