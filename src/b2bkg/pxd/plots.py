"""Plots of the PXD evaluation (hist + mplhep + matplotlib, PNG).

Every function takes already-reduced arrays (per-sensor means, summed integer histograms, dense
images of a few sensors), draws one figure in the shared style (:mod:`b2bkg.report.style`) and
writes it atomically to ``path``. The first sample is the reference of every ratio panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits
from b2bkg.report.style import COLORS, label, new_figure, save_figure

from .metrics import SENSOR_LADDER, SENSOR_LAYER, SENSOR_NUMBER

__all__ = [
    "integer_edges", "plot_occupancy_per_sensor", "plot_correlations", "plot_spectra", "plot_event_display",
]

_SENSOR_NAMES = [f"{la}.{ld}.{s}" for la, ld, s in zip(SENSOR_LAYER, SENSOR_LADDER, SENSOR_NUMBER)]


def integer_edges(max_value: int, *, min_value: int = 0, max_bins: int = 120, log: bool = True) -> np.ndarray:
    """Bin edges on an integer grid from ``min_value`` to ``max_value`` (inclusive): unit bins
    centred on the integers when they fit in ``max_bins``, else about ``max_bins`` log-spaced
    (``log=True``) or equal-width bins whose edges sit half-way between integers (so every
    integer falls in exactly one bin)."""
    lo, hi = int(min_value), max(int(max_value), int(min_value))
    if hi - lo + 1 <= max_bins:
        return np.arange(lo, hi + 2) - 0.5
    if not log:
        return np.unique(np.round(np.linspace(lo, hi + 1, max_bins + 1)).astype(np.int64)) - 0.5
    e = np.unique(np.round(np.geomspace(max(lo, 1), hi + 1, max_bins + 1)).astype(np.int64))
    e = np.unique(np.concatenate([np.arange(lo, e[0]), e]))
    return e - 0.5


def _rebin(h: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum an integer-grid histogram (bin k = value k) into ``edges``; the last bin takes the
    overflow. Returns (counts, variances) per bin."""
    vals = np.arange(len(h))
    idx = np.clip(np.searchsorted(edges, vals, side="right") - 1, 0, len(edges) - 2)
    keep = vals >= edges[0]
    c = np.bincount(idx[keep], weights=h[keep], minlength=len(edges) - 1)
    return c, c.copy()


def _hist(edges: np.ndarray, counts: np.ndarray, variances: np.ndarray, name: str, xlabel: str):
    import hist

    h = hist.Hist(hist.axis.Variable(edges, name=name, label=xlabel, flow=False), storage=hist.storage.Weight())
    h.view().value = counts
    h.view().variance = variances
    return h


def _ratio_panel(ax, edges, num, num_var, den, den_var, color):
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
        err = r * np.sqrt(num_var / num**2 + den_var / den**2)
    centres = 0.5 * (edges[1:] + edges[:-1])
    ok = np.isfinite(r) & (den > 0)
    ax.errorbar(centres[ok], r[ok], yerr=np.nan_to_num(err[ok]), fmt="o", ms=3, color=color, elinewidth=1)


def plot_occupancy_per_sensor(path: str | Path, means: Sequence[np.ndarray], errors: Sequence[np.ndarray],
                              labels: Sequence[str]) -> Path:
    """Mean occupancy of the 40 sensors per sample with a ratio panel to the first.

    Args:
        means: per sample, mean occupancy per sensor, percent, shape (40,).
        errors: per sample, standard error of that mean, percent, shape (40,).
        labels: legend name per sample.
    """
    import mplhep

    fig, (ax, rax) = new_figure(ratio=True, size=(12, 6))
    edges = np.arange(N_SENSORS + 1) - 0.5
    for i, (m, e, lab) in enumerate(zip(means, errors, labels)):
        mplhep.histplot(np.asarray(m), edges, yerr=np.asarray(e), ax=ax, label=lab, color=COLORS[i % len(COLORS)], lw=1.5)
        if i:
            _ratio_panel(rax, edges, np.asarray(m), np.asarray(e) ** 2, np.asarray(means[0]), np.asarray(errors[0]) ** 2,
                         COLORS[i % len(COLORS)])
    ax.axvline(15.5, color="grey", ls=":", lw=1)
    ax.set_ylabel("mean occupancy [%]")
    ax.set_ylim(0, None)
    ax.legend()
    label(ax)
    rax.axhline(1, color="grey", lw=1)
    rax.set_ylabel(f"/ {labels[0]}")
    rax.set_ylim(0.8, 1.2)
    rax.set_xticks(np.arange(N_SENSORS))
    rax.set_xticklabels(_SENSOR_NAMES, rotation=90, fontsize=7)
    rax.set_xlabel("sensor (layer.ladder.sensor)")
    return save_figure(fig, path)


def plot_correlations(path: str | Path, corr_a: np.ndarray, corr_b: np.ndarray, labels: Sequence[str]) -> Path:
    """The two 40x40 sensor-occupancy correlation matrices and their difference (b - a)."""
    fig, axes = new_figure(1, 3, size=(20, 5.8))
    fig.subplots_adjust(wspace=0.45)
    diag = np.eye(N_SENSORS, dtype=bool)
    for ax, m, title, cmap, lim in (
        (axes[0], corr_a, labels[0], "viridis", None),
        (axes[1], corr_b, labels[1], "viridis", None),
        (axes[2], corr_b - corr_a, f"{labels[1]} - {labels[0]}", "RdBu_r", "sym"),
    ):
        m = np.where(diag, np.nan, m)
        if lim == "sym":
            v = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
            vmin, vmax = -max(v, 1e-6), max(v, 1e-6)
        else:
            vmin, vmax = -1.0, 1.0
        im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest")
        ax.set_title(title)
        ax.axhline(15.5, color="k", lw=0.5)
        ax.axvline(15.5, color="k", lw=0.5)
        ax.set_xlabel("sensor index")
        ax.set_ylabel("sensor index")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Pearson r")
    return save_figure(fig, path)


def plot_spectra(path: str | Path, hists: Sequence[np.ndarray], labels: Sequence[str], xlabel: str, *,
                 min_value: int = 0, max_value: int | None = None, scale: float = 1.0, logy: bool = True,
                 max_bins: int = 120, log_bins: bool = True, ylabel: str = "normalized entries") -> Path:
    """Normalized spectra of an integer quantity with a ratio panel to the first sample.

    Args:
        hists: per sample, counts on the integer grid (bin k = value k), shape (K_i,).
        xlabel: axis label with unit.
        min_value, max_value: plotted range of the integer values (default: up to the 99.9 %
            quantile of the first sample); values above fall in the last bin.
        scale: multiply the x axis by this (e.g. pixel count -> occupancy in percent).
        log_bins: log-spaced bins when the range exceeds ``max_bins`` integers (else equal width).
    """
    import mplhep

    from .metrics import hist_quantile

    hists = [np.asarray(h, np.float64) for h in hists]
    if max_value is None:
        q = hist_quantile(hists[0], 0.999)
        max_value = int(q) if np.isfinite(q) else max(len(h) for h in hists) - 1
    max_value = max(max_value, min_value + 1)
    edges = integer_edges(max_value, min_value=min_value, max_bins=max_bins, log=log_bins)
    fig, (ax, rax) = new_figure(ratio=True)
    reb = [_rebin(h, edges) for h in hists]
    widths = np.diff(edges) * scale
    for i, ((c, v), lab) in enumerate(zip(reb, labels)):
        tot = c.sum()
        norm = tot * widths if tot > 0 else np.ones_like(widths)
        h = _hist(edges * scale, c / norm, v / norm**2, "x", xlabel)
        mplhep.histplot(h, ax=ax, label=lab, color=COLORS[i % len(COLORS)], lw=1.5)
        if i:
            c0, v0 = reb[0]
            t0 = c0.sum() or 1.0
            _ratio_panel(rax, edges * scale, c / (tot or 1.0), v / (tot or 1.0) ** 2, c0 / t0, v0 / t0**2,
                         COLORS[i % len(COLORS)])
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_xlabel("")
    ax.legend()
    label(ax)
    rax.axhline(1, color="grey", lw=1)
    rax.set_ylim(0.5, 1.5)
    rax.set_ylabel(f"/ {labels[0]}")
    rax.set_xlabel(xlabel)
    return save_figure(fig, path)


def plot_event_display(path: str | Path, samples: Sequence[PxdDigits], labels: Sequence[str], *,
                       event: int = 0, sensors: Sequence[int] = (0, 1, 16, 17)) -> Path:
    """One event of each sample (rows) on a few sensors (columns): every fired pixel drawn as a
    small square coloured by its charge (ADU, log scale), so single pixels stay visible."""
    from matplotlib.colors import LogNorm

    n_rows, n_cols = len(samples), len(sensors)
    fig, axes = new_figure(n_rows, n_cols, size=(3.6 * n_cols, 3.6 * n_rows + 0.6), squeeze=False)
    norm = LogNorm(vmin=1, vmax=255)
    sc = None
    for r, (d, lab) in enumerate(zip(samples, labels)):
        ev = d.event(min(event, d.n_events - 1)) if d.n_events else {k: np.zeros(0) for k in ("sensor", "ucell", "vcell", "charge")}
        for c, s in enumerate(sensors):
            ax = axes[r][c]
            m = ev["sensor"] == s
            sc = ax.scatter(ev["ucell"][m], ev["vcell"][m], c=ev["charge"][m], s=2.0, marker="s", linewidths=0,
                            norm=norm, cmap="viridis", rasterized=True)
            ax.set_xlim(-0.5, N_UCELLS - 0.5)
            ax.set_ylim(-0.5, N_VCELLS - 0.5)
            ax.set_title(f"{lab}: sensor {_SENSOR_NAMES[s]} ({int(m.sum())} px)", fontsize=10)
            ax.set_xlabel("ucell")
            if c == 0:
                ax.set_ylabel("vcell")
            ax.tick_params(labelsize=8)
    if sc is not None:
        fig.colorbar(sc, ax=[a for row in axes for a in row], fraction=0.02, pad=0.02, label="charge [ADU]")
    return save_figure(fig, path)
