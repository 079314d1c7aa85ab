"""The seed's four waveform metrics, the two-sample KS test per crystal, and event-level checks.

Per waveform ``S`` (31 samples, seed 004):
  * ``avg_amp_diff``: average amplitude difference ``(1/31) sum_i |S_i - mean(S)|``;
  * ``max_amp_diff``: maximum amplitude difference ``max(S) - min(S)``;
  * ``power``: power spectrum, ``|X_k|^2 / 31`` of the 15 non-DC DFT bins k = 1..15;
  * ``chi2``: ``D^T C^-1 D`` with ``D = S - G``, ``G`` the least-squares straight line through
    ``S`` and ``C`` the crystal's stationary (Toeplitz) autocovariance, estimated from the
    mean-subtracted waveforms of *both* samples pooled, so that neither side is favoured.

KS2 (the two-sample Kolmogorov-Smirnov statistic, ties handled like ``scipy.stats.ks_2samp``)
is computed per metric and crystal — for the power spectrum per bin, averaged over the 15
bins — and the four are averaged. KS2 depends on the sample size: always quote ``n`` and compare
with the truth-vs-truth floor at the same ``n``.

Shapes: per-crystal batches are (C, n, 31) — C crystals, n waveforms each. Missing waveforms
(e.g. the selected ones, excluded) are rows of NaN; they are ignored.

Example:
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(3000, 10, (2, 300, 31)); b = rng.normal(3000, 10, (2, 300, 31))
    >>> ks = ks2_per_crystal(a, b)
    >>> sorted(ks), bool(ks["mean"].max() < 0.2)
    (['avg_amp_diff', 'chi2', 'max_amp_diff', 'mean', 'power'], True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import toeplitz

from b2bkg.core.errors import ConfigError
from b2bkg.core.seeding import stream_rng

from .geometry import N_CRYSTALS, crystal_theta_id

__all__ = [
    "METRIC_NAMES",
    "N_POWER_BINS",
    "waveform_metrics",
    "pooled_autocovariance",
    "ks2",
    "ks2_per_crystal",
    "ValidationSubset",
    "make_validation_subset",
    "mean_ks2",
    "noise_power",
    "event_level_checks",
    "pedestal_check",
]

METRIC_NAMES = ("avg_amp_diff", "max_amp_diff", "power", "chi2")
N_POWER_BINS = 15
_N = 31


def _check_batch(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 3 or a.shape[-1] != _N:
        raise ConfigError(f"{name}: shape {a.shape}, expected (crystals, waveforms, {_N})")
    return a


def pooled_autocovariance(*batches: np.ndarray) -> np.ndarray:
    """Stationary autocovariance per crystal over lags 0..30 from the pooled batches.

    Args:
        batches: each (C, n_b, 31) waveforms (NaN rows ignored).
    Returns:
        (C, 31) autocovariance r[lag], ADC^2 (biased estimator: divided by 31, so the Toeplitz
        matrix is positive semi-definite).
    """
    acc = None
    count = None
    for b in batches:
        b = _check_batch(b, "batch")
        ok = ~np.isnan(b).any(axis=2)  # (C, n)
        d = np.where(ok[..., None], b - b.mean(axis=2, keepdims=True), 0.0)
        f = np.fft.rfft(d, n=2 * _N, axis=2)
        r = np.fft.irfft(np.abs(f) ** 2, n=2 * _N, axis=2)[..., :_N] / _N  # (C, n, 31)
        s = r.sum(axis=1)
        acc = s if acc is None else acc + s
        count = ok.sum(axis=1) if count is None else count + ok.sum(axis=1)
    return acc / np.maximum(count, 1)[:, None]


def _line_residual(s: np.ndarray) -> np.ndarray:
    """S minus its least-squares straight line, same shape (..., 31)."""
    k = np.arange(_N) - (_N - 1) / 2.0
    mean = s.mean(axis=-1, keepdims=True)
    slope = (s * k).sum(axis=-1, keepdims=True) / (k**2).sum()
    return s - mean - slope * k


def waveform_metrics(waveforms: np.ndarray, autocov: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The four metrics of every waveform.

    Args:
        waveforms: (C, n, 31) ADC.
        autocov: (C, 31) autocovariance per crystal for chi2 (default: from ``waveforms`` alone).
    Returns:
        dict: ``avg_amp_diff``, ``max_amp_diff``, ``chi2``: (C, n); ``power``: (C, n, 15).
        NaN where the waveform is NaN.
    """
    s = _check_batch(waveforms, "waveforms")
    if autocov is None:
        autocov = pooled_autocovariance(s)
    autocov = np.asarray(autocov, dtype=np.float64)
    if autocov.shape != (s.shape[0], _N):
        raise ConfigError(f"autocov: shape {autocov.shape}, expected ({s.shape[0]}, {_N})")
    mean = s.mean(axis=2, keepdims=True)
    avg = np.abs(s - mean).mean(axis=2)
    mx = s.max(axis=2) - s.min(axis=2)
    power = np.abs(np.fft.rfft(s, axis=2)[..., 1 : N_POWER_BINS + 1]) ** 2 / _N
    d = _line_residual(s)  # (C, n, 31)
    c = np.stack([toeplitz(a) for a in autocov])  # (C, 31, 31); loop builds matrices only
    c += np.eye(_N) * (1e-6 * np.maximum(autocov[:, :1, None], 1e-12))
    cinv = np.linalg.inv(c)
    chi2 = np.einsum("cni,cij,cnj->cn", d, cinv, d, optimize=True)
    return {"avg_amp_diff": avg, "max_amp_diff": mx, "power": power, "chi2": chi2}


def ks2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-sample KS statistic along the last axis, batched; NaN entries are ignored.

    Args:
        x: (..., n1); y: (..., n2) with the same leading shape.
    Returns:
        (...) statistic in [0, 1] (NaN where one side has no valid entry). Matches
        ``scipy.stats.ks_2samp(x, y).statistic`` for each slice, ties included.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[:-1] != y.shape[:-1]:
        raise ConfigError(f"ks2: leading shapes differ: {x.shape[:-1]} vs {y.shape[:-1]}")
    z = np.concatenate([x, y], axis=-1)
    lab = np.concatenate([np.zeros(x.shape, np.int8), np.ones(y.shape, np.int8)], axis=-1)
    order = np.argsort(z, axis=-1, kind="stable")  # NaN sort last
    zs = np.take_along_axis(z, order, axis=-1)
    ls = np.take_along_axis(lab, order, axis=-1)
    valid = ~np.isnan(zs)
    n1 = (valid & (ls == 0)).sum(axis=-1, keepdims=True)
    n2 = (valid & (ls == 1)).sum(axis=-1, keepdims=True)
    c1 = np.cumsum(valid & (ls == 0), axis=-1) / np.maximum(n1, 1)
    c2 = np.cumsum(valid & (ls == 1), axis=-1) / np.maximum(n2, 1)
    # evaluate only at the last element of each run of equal values
    last = np.ones(zs.shape, dtype=bool)
    last[..., :-1] = zs[..., 1:] != zs[..., :-1]
    d = np.where(last & valid, np.abs(c1 - c2), 0.0).max(axis=-1)
    return np.where((n1[..., 0] > 0) & (n2[..., 0] > 0), d, np.nan)


def ks2_per_crystal(real: np.ndarray, fake: np.ndarray) -> dict[str, np.ndarray]:
    """KS2 of the four metrics per crystal and their mean.

    Args:
        real: (C, n1, 31); fake: (C, n2, 31), the same C crystals in the same order.
    Returns:
        dict of (C,) arrays: one per metric (power: mean over its 15 bins) and ``mean``.
    """
    r = _check_batch(real, "real")
    f = _check_batch(fake, "fake")
    if r.shape[0] != f.shape[0]:
        raise ConfigError(f"ks2_per_crystal: {r.shape[0]} real vs {f.shape[0]} fake crystals")
    cov = pooled_autocovariance(r, f)
    mr, mf = waveform_metrics(r, cov), waveform_metrics(f, cov)
    out = {}
    for k in METRIC_NAMES:
        if k == "power":
            out[k] = ks2(np.moveaxis(mr[k], 2, 1), np.moveaxis(mf[k], 2, 1)).mean(axis=1)  # (C, 15) -> (C,)
        else:
            out[k] = ks2(mr[k], mf[k])
    out["mean"] = np.mean([out[k] for k in METRIC_NAMES], axis=0)
    return out


@dataclass
class ValidationSubset:
    """Fixed subsample for cheap per-epoch model selection.

    Attributes:
        crystals: 0-based crystal indices (cellId - 1), shape (C,), sorted.
        waveforms: (C, n, 31) float32 ADC, waveform j of every crystal from event ``events[j]``.
        events: event indices used, shape (n,).
    """

    crystals: np.ndarray
    waveforms: np.ndarray
    events: np.ndarray

    @property
    def theta_id(self) -> np.ndarray:
        return crystal_theta_id()[self.crystals]


def make_validation_subset(waveforms, n_crystals: int = 64, n_waveforms: int = 500, seed: int = 0, mask: np.ndarray | None = None) -> ValidationSubset:
    """Pick ``n_crystals`` crystals (stratified in thetaId, fixed by ``seed``) and up to ``n_waveforms`` events.

    Args:
        waveforms: EclWaveforms or array (n_events, 8736, 31).
        mask: optional bool (n_events, 8736) of waveforms to exclude (the selected ones): NaN rows.
    """
    w = waveforms.waveforms if hasattr(waveforms, "waveforms") else np.asarray(waveforms)
    if w.ndim != 3 or w.shape[1:] != (N_CRYSTALS, _N):
        raise ConfigError(f"waveforms: shape {w.shape}, expected (n_events, {N_CRYSTALS}, {_N})")
    if not 1 <= n_crystals <= N_CRYSTALS or n_waveforms < 2:
        raise ConfigError(f"n_crystals={n_crystals} (1..{N_CRYSTALS}), n_waveforms={n_waveforms} (>= 2)")
    rng = stream_rng(seed, "ecl.validation")
    # stratified: split the crystal index range (ordered by theta) into n_crystals strata
    edges = np.linspace(0, N_CRYSTALS, n_crystals + 1).astype(np.int64)
    crystals = edges[:-1] + (rng.random(n_crystals) * np.diff(edges)).astype(np.int64)
    n_ev = len(w)
    events = np.sort(rng.choice(n_ev, size=min(n_waveforms, n_ev), replace=False))
    sub = w[events][:, crystals, :].astype(np.float32)  # (n, C, 31)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)[events][:, crystals]
        sub[m] = np.nan
    return ValidationSubset(crystals, np.ascontiguousarray(np.transpose(sub, (1, 0, 2))), events)


def mean_ks2(real, fake) -> float:
    """Mean over crystals of the mean KS2 of the four metrics (the per-epoch selection score).

    Args:
        real, fake: (C, n, 31) arrays or :class:`ValidationSubset` for the same crystals.
    """
    r = real.waveforms if isinstance(real, ValidationSubset) else real
    f = fake.waveforms if isinstance(fake, ValidationSubset) else fake
    return float(np.nanmean(ks2_per_crystal(r, f)["mean"]))


# ---------------------------------------------------------------------------------------------
# event-level checks the per-waveform metrics cannot see
# ---------------------------------------------------------------------------------------------
def noise_power(waveforms: np.ndarray) -> np.ndarray:
    """Noise power of every waveform: variance of its 31 samples, ADC^2; (..., 31) -> (...)."""
    w = np.asarray(waveforms, dtype=np.float64)
    return w.var(axis=-1)


def event_level_checks(truth: np.ndarray, generated: np.ndarray, *, n_pairs_crystals: int = 256, seed: int = 0,
                       truth_mask: np.ndarray | None = None, generated_mask: np.ndarray | None = None) -> dict:
    """Per-event noise power and its correlation between crystals, truth vs generated.

    The per-waveform power ``P`` (:func:`noise_power`) has long tails (pulses); the event-level
    statistics therefore use ``log P`` (ADC^2) where noted.

    Args:
        truth, generated: (n_events, 8736, 31) ADC (may have different n_events; >= 3 each for
            the correlations).
        truth_mask, generated_mask: optional bool (n_events, 8736): waveforms to leave out (the
            selected, energetic ones that a hybrid keeps from data); their power counts as missing.
    Returns:
        dict with, per sample: ``n_events``; ``summed_power_mean_adu2`` and ``summed_power_rel_sd``
        (per-event sum of P over crystals); ``median_power_mean_adu2`` and
        ``median_power_rel_sd`` (per-event median of P: the event's typical noise level, which the
        beam conditions and the coherent noise move); ``pair_corr`` (mean Pearson correlation over
        events of log P between all pairs of ``n_pairs_crystals`` fixed crystals) and
        ``coherence`` = var(sum_c log P_c) / sum_c var(log P_c) (1 for independent crystals); and
        ``ks2_summed_power``, ``ks2_median_power`` between the two samples.
    """
    rng = stream_rng(seed, "ecl.event_checks")
    crys = np.sort(rng.choice(N_CRYSTALS, size=min(n_pairs_crystals, N_CRYSTALS), replace=False))
    out = {}
    sums, meds = {}, {}
    for name, w, m in (("truth", truth, truth_mask), ("generated", generated, generated_mask)):
        w = np.asarray(w)
        p = np.stack([noise_power(w[i]) for i in range(len(w))])  # (n_events, 8736); loop over events
        if m is not None:
            p = np.where(np.asarray(m, bool)[: len(p)], np.nan, p)
        lp = np.log(np.maximum(p, 1e-3))
        s, med = np.nansum(p, axis=1) * (p.shape[1] / np.maximum(np.isfinite(p).sum(axis=1), 1)), np.nanmedian(p, axis=1)
        sums[name], meds[name] = s, med
        entry = {
            "n_events": int(len(w)),
            "summed_power_mean_adu2": float(s.mean()),
            "summed_power_rel_sd": float(s.std() / s.mean()),
            "median_power_mean_adu2": float(med.mean()),
            "median_power_rel_sd": float(med.std() / med.mean()),
        }
        if len(w) >= 3:
            lpc = np.where(np.isfinite(lp), lp, np.nanmean(lp, axis=0, keepdims=True))  # impute masked crystals
            c = np.corrcoef(lpc[:, crys].T)
            iu = np.triu_indices(len(crys), 1)
            entry["pair_corr"] = float(np.nanmean(c[iu]))
            entry["coherence"] = float(lpc.sum(axis=1).var() / lpc.var(axis=0).sum())
        out[name] = entry
    out["ks2_summed_power"] = float(ks2(sums["truth"], sums["generated"]))
    out["ks2_median_power"] = float(ks2(meds["truth"], meds["generated"]))
    return out


def pedestal_check(truth: np.ndarray, generated: np.ndarray) -> dict:
    """Pedestal distribution: per-waveform median of the 31 samples, truth vs generated.

    Returns KS2 of the pooled per-waveform pedestals, the mean absolute difference of the
    per-crystal mean pedestals (ADC) and both means/spreads.
    """
    pt = np.median(np.asarray(truth), axis=-1)  # (n, 8736)
    pg = np.median(np.asarray(generated), axis=-1)
    rng = np.random.default_rng(0)
    a = pt.ravel()
    b = pg.ravel()
    a = a if a.size <= 200_000 else rng.choice(a, 200_000, replace=False)
    b = b if b.size <= 200_000 else rng.choice(b, 200_000, replace=False)
    return {
        "ks2_pooled": float(ks2(a, b)),
        "mean_abs_diff_per_crystal_adu": float(np.abs(pt.mean(0) - pg.mean(0)).mean()),
        "truth_mean_adu": float(pt.mean()),
        "truth_sd_adu": float(pt.std()),
        "generated_mean_adu": float(pg.mean()),
        "generated_sd_adu": float(pg.std()),
    }
