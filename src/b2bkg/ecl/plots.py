"""ECL plots (matplotlib + hist + mplhep), each written atomically as a PNG.

All functions take plain arrays and an output path and return the path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .geometry import BARREL_RINGS, barrel_map

__all__ = ["plot_ks2_per_crystal", "plot_metric_histograms", "plot_mean_waveforms", "plot_power_bins", "plot_barrel_map"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    from b2bkg.io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _plt().close(fig)
    return path


def _hist1d(ax, values_by_label: dict[str, np.ndarray], bins: int = 60, xlabel: str = "", log: bool = False):
    import hist
    import mplhep

    vals = [np.asarray(v, dtype=np.float64).ravel() for v in values_by_label.values()]
    vals = [v[np.isfinite(v)] for v in vals]
    allv = np.concatenate(vals) if vals else np.zeros(1)
    if allv.size == 0:
        allv = np.zeros(1)
    lo, hi = np.quantile(allv, [0.0, 0.999])
    if hi <= lo:
        hi = lo + 1.0
    for (label, _), v in zip(values_by_label.items(), vals):
        h = hist.Hist(hist.axis.Regular(bins, lo, hi, name="x"))
        h.fill(np.clip(v, lo, hi))
        mplhep.histplot(h, ax=ax, label=label, density=True)
    ax.set_xlabel(xlabel)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7)


def plot_ks2_per_crystal(ks2: dict[str, np.ndarray], path, *, floor: np.ndarray | None = None, n: int | None = None) -> Path:
    """Mean KS2 per crystal id (like the seed's figure) and its distribution.

    Args:
        ks2: label -> (8736,) mean KS2 per crystal (one entry per model).
        floor: (8736,) truth-vs-truth KS2, drawn in grey.
        n: waveforms per crystal (printed in the title: KS2 depends on it).
    """
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    ids = np.arange(1, len(next(iter(ks2.values()))) + 1)
    if floor is not None:
        a1.plot(ids, floor, ",", color="grey", label=f"truth vs truth (mean {np.nanmean(floor):.3f})")
    for label, v in ks2.items():
        a1.plot(ids, v, ",", label=f"{label} (mean {np.nanmean(v):.3f})")
    a1.set_xlabel("crystal id")
    a1.set_ylabel("mean KS2 of the four metrics")
    a1.legend(fontsize=7, markerscale=20)
    hists = dict(ks2)
    if floor is not None:
        hists = {"truth vs truth": floor, **hists}
    _hist1d(a2, hists, bins=50, xlabel="KS2")
    fig.suptitle(f"KS2 per crystal (n = {n} waveforms per crystal)" if n else "KS2 per crystal")
    fig.tight_layout()
    return _save(fig, path)


def plot_metric_histograms(metrics: dict[str, dict[str, np.ndarray]], path, *, n: int | None = None) -> Path:
    """Histograms of the four waveform metrics; ``metrics``: label -> waveform_metrics() output."""
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    names = (("avg_amp_diff", "avg. amplitude difference [ADC]", True), ("max_amp_diff", "max. amplitude difference [ADC]", True),
             ("power", "power, summed over 15 bins [ADC$^2$]", True), ("chi2", r"$\chi^2$ from straight line", True))
    for ax, (k, xl, log) in zip(axes, names):
        vals = {lab: (m[k].sum(axis=-1) if k == "power" else m[k]) for lab, m in metrics.items()}
        _hist1d(ax, vals, xlabel=xl, log=log)
    fig.suptitle(f"waveform metrics (n = {n} waveforms per crystal)" if n else "waveform metrics")
    fig.tight_layout()
    return _save(fig, path)


def plot_mean_waveforms(mean_by_ring: dict[str, np.ndarray], path, *, rings=(0, 6, 12, 13, 36, 58, 59, 68)) -> Path:
    """Mean waveform (minus its own average) of a few theta rings; values label -> (69, 31) ADC."""
    plt = _plt()
    fig, axes = plt.subplots(2, 4, figsize=(14, 5.5), sharex=True)
    k = np.arange(31)
    for ax, r in zip(axes.ravel(), rings):
        for label, m in mean_by_ring.items():
            ax.plot(k, m[r] - m[r].mean(), drawstyle="steps-mid", label=label)
        ax.set_title(f"thetaId {r}", fontsize=9)
        ax.set_xlabel("sample")
    axes[0, 0].set_ylabel("mean - average [ADC]")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_power_bins(power: dict[str, np.ndarray], path) -> Path:
    """The 15 power-spectrum bins (histogram per bin, like the seed's backup slide).

    Args:
        power: label -> (..., 15) power per waveform, ADC^2.
    """
    plt = _plt()
    fig, axes = plt.subplots(3, 5, figsize=(15, 8))
    for b, ax in enumerate(axes.ravel()):
        _hist1d(ax, {lab: p.reshape(-1, 15)[:, b] for lab, p in power.items()}, bins=40, xlabel=f"bin {b + 1} power [ADC$^2$]", log=True)
    fig.tight_layout()
    return _save(fig, path)


def plot_barrel_map(values: np.ndarray, path, *, title: str = "barrel crystals kept by the selection") -> Path:
    """Barrel map (thetaId 13-58 x phiId 0-143) of one event's values or selection mask, shape (8736,)."""
    plt = _plt()
    img = barrel_map(np.asarray(values, dtype=np.float64))
    fig, ax = plt.subplots(figsize=(11, 4))
    im = ax.imshow(img, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest",
                   extent=(-0.5, 143.5, BARREL_RINGS.start - 0.5, BARREL_RINGS.stop - 0.5))
    ax.set_xlabel("phiId")
    ax.set_ylabel("thetaId")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return _save(fig, path)
