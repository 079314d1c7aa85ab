"""Plots of the physics validation: pull distributions like the paper's Figure 3, vertex residuals,
ECL cluster physics (energy response, cluster time, pi0 mass, E_extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_pulls", "plot_vertex", "plot_ecl"]

_STYLE = {"none": ("(a) no PXD background", "tab:blue"), "truth": ("(b) true background", "tab:red"),
          "generated": ("(c) generated background", "tab:green")}


def _fig(nrows, ncols):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.9 * nrows), squeeze=False)


def plot_pulls(pulls: dict[str, dict[str, np.ndarray]], widths: dict[str, dict[str, dict]], out, *,
               bins: dict[str, tuple[float, float]]) -> Path:
    """d0 (left) and z0 (right) pull distributions per pT bin (rows), one curve per scenario.

    Args:
        pulls: scenario -> {"pulls": (n, 5), "pt": (n,) GeV, "ok": (n,) bool}.
        widths: scenario -> pT bin -> summary dict with d0/z0 pull widths and errors.
        out: PNG path.
        bins: pT bin name -> (lo, hi) GeV.
    """
    plt, fig, axes = _fig(len(bins), 2)
    edges = np.linspace(-6, 6, 61)
    for r, (bname, (lo, hi)) in enumerate(bins.items()):
        for c, (pi, pname) in enumerate(((0, "d0"), (1, "z0"))):
            ax = axes[r, c]
            for scen, d in pulls.items():
                m = d["ok"] & (d["pt"] >= lo) & (d["pt"] < hi)
                w = widths[scen][bname]
                label, color = _STYLE.get(scen, (scen, None))
                h, _ = np.histogram(np.clip(d["pulls"][m, pi], -6, 6), bins=edges)
                h = h / max(h.sum(), 1)
                ax.stairs(h, edges, color=color,
                          label=f"{label}: $\\sigma$ = {w[f'{pname}_pull_width']:.3f} $\\pm$ {w[f'{pname}_pull_width_err']:.3f}")
            ax.set_xlabel(f"{pname} pull")
            ax.set_ylabel("fraction of tracks")
            ax.set_title(f"{pname}, {lo:g} < pT < {hi:g} GeV" if lo > 0 else f"{pname}, pT < {hi:g} GeV")
            ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_vertex(residuals: dict[str, np.ndarray], summaries: dict[str, dict], out) -> Path:
    """D0 vertex residuals (x, y, z in um), one curve per scenario, resolutions in the legend."""
    plt, fig, axes = _fig(1, 3)
    edges = np.linspace(-200, 200, 81)
    for i, comp in enumerate("xyz"):
        ax = axes[0, i]
        for scen, r in residuals.items():
            label, color = _STYLE.get(scen, (scen, None))
            s = summaries[scen]
            h, _ = np.histogram(np.clip(r[:, i] * 1e3, -200, 200), bins=edges)
            ax.stairs(h / max(h.sum(), 1), edges, color=color,
                      label=f"{label}: {s[f'{comp}_resolution_um']:.1f} um, pull {s[f'{comp}_pull_width']:.2f}")
        ax.set_xlabel(f"D0 vertex {comp} residual (um)")
        ax.set_ylabel("fraction of decays")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_ecl(arrays: dict[str, dict[str, np.ndarray]], summaries: dict[str, dict], out) -> Path:
    """ECL cluster physics, one curve per scenario, fitted numbers in the legends.

    Args:
        arrays: scenario -> {"response": (n,) E_cluster / E_true - 1 of single photons, "dt_ns": (m,)
            cluster time - true time (ns), "pi0_mass_gev": (k,) GeV, "e_extra_gev": (n_events,) GeV}.
        summaries: scenario -> the numbers of :func:`b2bkg.validation.ecl.summarize`.
        out: PNG path.
    """
    plt, fig, axes = _fig(1, 4)
    panels = (
        ("response", np.linspace(-0.3, 0.2, 51), 1.0, "E_cluster / E_true - 1 (single photons)",
         lambda s: f"{s['energy_resolution']:.4f} $\\pm$ {s['energy_resolution_err']:.4f}"),
        ("dt_ns", np.linspace(-30, 30, 61), 1.0, "cluster time - true time (ns)",
         lambda s: f"{s['time_resolution_ns']:.2f} $\\pm$ {s['time_resolution_ns_err']:.2f} ns"),
        ("pi0_mass_gev", np.linspace(80, 180, 51), 1e3, "M($\\gamma\\gamma$) (MeV), matched pi0 photons",
         lambda s: f"{1e3 * s['pi0_mass_mean_gev']:.1f}, $\\sigma$ {1e3 * s['pi0_mass_width_gev']:.1f} $\\pm$ {1e3 * s['pi0_mass_width_gev_err']:.1f} MeV"),
        ("e_extra_gev", np.linspace(0, 1.0, 41), 1.0, "E_extra per event (GeV)",
         lambda s: f"<E> {s['e_extra_mean_gev']:.3f} $\\pm$ {s['e_extra_mean_gev_err']:.3f} GeV"),
    )
    for ax, (key, edges, scale, xlabel, fmt) in zip(axes[0], panels):
        for scen, arr in arrays.items():
            label, color = _STYLE.get(scen, (scen, None))
            label = label.replace("PXD", "ECL")
            x = np.clip(np.asarray(arr[key]) * scale, edges[0], edges[-1])
            h, _ = np.histogram(x, bins=edges)
            s = summaries[scen]
            try:
                text = fmt(s)
            except (TypeError, ValueError):  # a None / NaN number: too few entries to fit
                text = "n/a"
            ax.stairs(h / max(h.sum(), 1), edges, color=color, label=f"{label}: {text}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction")
        ax.legend(fontsize=6)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
