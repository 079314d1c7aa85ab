"""Is the filtered-and-weighted sample the same physics? Weighted-histogram chi2 tests and plots.

Monitored distributions (of skim-passing events; :func:`monitored_variables`): Mbc, Delta E and tag-B
momentum of the skim's best candidate, the numbers of clean tracks and clusters and the visible
energy. A filtered sample (weights w) is compared with an *independent* unfiltered reference
sample (unit weights), both normalized per generated event (N_test, N_ref input events), bin by
bin (Gagunashvili, "Comparison of weighted and unweighted histograms", arXiv:physics/0605123, in
its large-count form):

    chi2 = sum_i (W_i / N_test - R_i / N_ref)^2 / (S_i / N_test^2 + R_i / N_ref^2),

with W_i = sum w and S_i = sum w^2 of the test events in bin i and R_i the reference count;
ndf = number of bins with entries (``shape_only``: both normalized to unit area and ndf - 1,
used for the hard threshold whose normalization is lost anyway). Bins are quantiles of the
reference (integer variables on half-integer edges), so every bin holds >= ~``min_count``
reference events; values outside fall into the end bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["monitored_variables", "Chi2Result", "monitored_values", "quantile_edges", "weighted_hist", "weighted_chi2",
           "compare_samples", "plot_comparison"]


def monitored_variables(skim: str) -> dict[str, tuple[str, str, bool]]:
    """``{label: (per-event dataset, axis label, integer)}`` of the monitored distributions of ``skim``."""
    return {
        "mbc": (f"mbc_{skim}", "M_bc (GeV)", False),
        "delta_e": (f"de_{skim}", "Delta E (GeV)", False),
        "tag_p": (f"tag_p_{skim}", "tag-B momentum (GeV)", False),
        "n_tracks": ("n_tracks", "clean tracks", True),
        "n_clusters": ("n_clusters", "clean clusters", True),
        "e_visible": ("e_visible", "visible energy (GeV)", False),
    }


@dataclass(frozen=True)
class Chi2Result:
    chi2: float
    ndf: int
    p_value: float

    def as_dict(self) -> dict:
        return {"chi2": self.chi2, "ndf": self.ndf, "p_value": self.p_value}


def monitored_values(per_event: dict[str, np.ndarray], skim: str, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Values of the monitored variables (float64) for the events in ``mask`` (default: all)."""
    out = {}
    for name, (key, _, _) in monitored_variables(skim).items():
        v = np.asarray(per_event[key], np.float64)
        out[name] = v if mask is None else v[mask]
    return out


def quantile_edges(ref: np.ndarray, n_bins: int = 20, integer: bool = False) -> np.ndarray:
    """Bin edges at quantiles of ``ref`` (finite values), deduplicated; integers get half-integer edges."""
    ref = ref[np.isfinite(ref)]
    if len(ref) == 0:
        return np.array([0.0, 1.0])
    q = np.quantile(ref, np.linspace(0, 1, n_bins + 1))
    if integer:
        inner = np.unique(np.floor(q[1:-1]) + 0.5)
        return np.concatenate([[ref.min() - 0.5], inner[(inner > ref.min()) & (inner < ref.max())], [ref.max() + 0.5]])
    e = np.unique(q)
    return e if len(e) >= 2 else np.array([ref.min() - 0.5, ref.max() + 0.5])


def weighted_hist(values: np.ndarray, weights: np.ndarray | None, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum w, sum w^2) per bin; values outside the edges go to the end bins, NaN are dropped."""
    v = np.asarray(values, np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, np.float64)
    ok = np.isfinite(v)
    idx = np.clip(np.searchsorted(edges, v[ok], side="right") - 1, 0, len(edges) - 2)
    nb = len(edges) - 1
    return np.bincount(idx, w[ok], nb), np.bincount(idx, w[ok] ** 2, nb)


def weighted_chi2(test_w: np.ndarray, test_w2: np.ndarray, n_test: float, ref: np.ndarray, n_ref: float,
                  shape_only: bool = False) -> Chi2Result:
    """Chi2 of a weighted test histogram (sum w, sum w^2 per bin) against an unweighted reference.

    ``n_test``, ``n_ref``: the normalizations (generated events); with ``shape_only`` both
    histograms are normalized to unit area instead and ndf is reduced by one.
    """
    W, S, R = (np.asarray(a, np.float64) for a in (test_w, test_w2, ref))
    if shape_only:
        n_test, n_ref = W.sum(), R.sum()
    if n_test <= 0 or n_ref <= 0:
        return Chi2Result(float("nan"), 0, float("nan"))
    var = S / n_test**2 + R / n_ref**2
    ok = var > 0
    chi2 = float((((W / n_test - R / n_ref) ** 2)[ok] / var[ok]).sum())
    ndf = int(ok.sum()) - (1 if shape_only else 0)
    return Chi2Result(chi2, ndf, float(stats.chi2.sf(chi2, ndf)) if ndf > 0 else float("nan"))


def compare_samples(test_pe: dict, test_w: np.ndarray, n_test: int, ref_pe: dict, n_ref: int, skim: str, *,
                    n_bins: int = 20, shape_only: bool = False) -> dict[str, dict]:
    """Chi2 of every monitored distribution of skim-passing events: weighted test vs reference.

    Args:
        test_pe: per-event arrays of the filtered sample (needs ``passed_<skim>`` and the monitored datasets).
        test_w: weight of each test event for this skim (0 = not kept).
        n_test: generated (input) events behind the test sample.
        ref_pe, n_ref: the independent unfiltered reference sample and its size.
    Returns:
        ``{name: {"chi2", "ndf", "p_value", "edges"}}`` plus ``"pass_count"``: weighted pass count
        (scaled to n_ref), its error and the reference's.
    """
    tp = np.asarray(test_pe[f"passed_{skim}"], bool) & (np.asarray(test_w) > 0)
    rp = np.asarray(ref_pe[f"passed_{skim}"], bool)
    tv, rv = monitored_values(test_pe, skim, tp), monitored_values(ref_pe, skim, rp)
    w = np.asarray(test_w, np.float64)[tp]
    out = {}
    for name, (_, _, integer) in monitored_variables(skim).items():
        edges = quantile_edges(rv[name], n_bins, integer)
        W, S = weighted_hist(tv[name], w, edges)
        R, _ = weighted_hist(rv[name], None, edges)
        res = weighted_chi2(W, S, n_test, R, n_ref, shape_only)
        out[name] = {**res.as_dict(), "edges": edges.tolist()}
    sw = float(w.sum()) * n_ref / max(n_test, 1)
    out["pass_count"] = {"weighted": sw, "weighted_err": float(np.sqrt((w**2).sum())) * n_ref / max(n_test, 1),
                         "reference": int(rp.sum()), "ratio": sw / max(int(rp.sum()), 1)}
    return out


def plot_comparison(samples: list[tuple[str, dict, np.ndarray, int]], ref: tuple[str, dict, int], skim: str, path,
                    results: dict | None = None, n_bins: int = 20, title: str = "") -> None:
    """Monitored distributions with ratio panels: every sample (label, per_event, weights, n_generated)
    against the reference (label, per_event, n_generated), normalized per generated event.

    ``results``: optional ``{sample label: compare_samples(...)}`` whose p-values go into the legend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mon = monitored_variables(skim)
    fig, axes = plt.subplots(2, len(mon), figsize=(4 * len(mon), 5.5), gridspec_kw={"height_ratios": [3, 1]}, sharex="col")
    r_label, r_pe, r_n = ref
    rp = np.asarray(r_pe[f"passed_{skim}"], bool)
    rv = monitored_values(r_pe, skim, rp)
    for j, (name, (_, xlabel, integer)) in enumerate(mon.items()):
        edges = quantile_edges(rv[name], n_bins, integer)
        centres = 0.5 * (edges[1:] + edges[:-1])
        widths = np.diff(edges)
        R, _ = weighted_hist(rv[name], None, edges)
        rden = R / r_n / widths
        top, bot = axes[0, j], axes[1, j]
        top.stairs(rden, edges, color="k", label=f"{r_label} (unfiltered, independent)")
        bot.axhline(1.0, color="k", lw=0.8)
        for k, (label, pe, w, n) in enumerate(samples):
            tp = np.asarray(pe[f"passed_{skim}"], bool) & (np.asarray(w) > 0)
            tv = monitored_values(pe, skim, tp)[name]
            W, S = weighted_hist(tv, np.asarray(w, np.float64)[tp], edges)
            norm = n
            if results and label in results and results[label].get("_shape_only"):
                norm = n * W.sum() / max(R.sum() * n / r_n, 1e-12)  # area-normalized to the reference
            den, err = W / norm / widths, np.sqrt(S) / norm / widths
            p = results[label][name]["p_value"] if results and label in results else None
            lab = label + ("" if p is None else f" (chi2 p={p:.2g})")
            off = (k - (len(samples) - 1) / 2) * 0.08 * widths
            top.errorbar(centres + off, den, yerr=err, fmt="o", ms=3, color=f"C{k}", label=lab)
            ratio = np.divide(den, rden, out=np.full_like(den, np.nan), where=rden > 0)
            rerr = np.divide(err, rden, out=np.full_like(err, np.nan), where=rden > 0)
            bot.errorbar(centres + off, ratio, yerr=rerr, fmt="o", ms=3, color=f"C{k}")
        top.set_title(name)
        top.set_ylabel("passing events / generated event / unit")
        bot.set_xlabel(xlabel)
        bot.set_ylabel("ratio to ref.")
        bot.set_ylim(0.5, 1.5)
        if j == 0:
            top.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
