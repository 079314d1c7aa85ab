"""One plotting style for every figure of b2bkg (matplotlib + mplhep, non-interactive Agg backend).

Call :func:`use_style` before plotting; :func:`new_figure` and :func:`save_figure` are the two
helpers every plot module uses (PNG written atomically: temporary name, then rename).

Example:
    >>> fig, ax = new_figure()
    >>> _ = ax.plot([0, 1], [0, 1])
    >>> import tempfile, pathlib
    >>> p = save_figure(fig, pathlib.Path(tempfile.mkdtemp()) / "x.png")
    >>> p.exists()
    True
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["use_style", "new_figure", "save_figure", "label", "COLORS", "DPI"]

#: colours of the compared samples: truth, generated, second truth, further models
COLORS = ("#1f1f1f", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e")
DPI = 110
_STYLED = False


def use_style() -> None:
    """Select the Agg backend (unless pyplot is already in use, e.g. in a notebook) and the
    mplhep ROOT style with a few b2bkg tweaks. Idempotent."""
    global _STYLED
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    if _STYLED:
        return
    import mplhep

    mplhep.style.use("ROOT")
    matplotlib.rcParams.update({
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
        "font.size": 12,
        "axes.titlesize": 12,
        "legend.fontsize": 10,
        "legend.frameon": False,
        "image.cmap": "viridis",
        "axes.prop_cycle": matplotlib.cycler(color=list(COLORS)),
    })
    _STYLED = True


def new_figure(nrows: int = 1, ncols: int = 1, *, ratio: bool = False, size: tuple[float, float] | None = None, **kw):
    """Styled figure. ``ratio=True`` gives a main panel over a ratio panel sharing x (one column);
    returns ``(fig, (ax_main, ax_ratio))`` then, else ``(fig, axes)`` like ``plt.subplots``."""
    use_style()
    import matplotlib.pyplot as plt

    if ratio:
        fig, axes = plt.subplots(2, 1, sharex=True, figsize=size or (7, 6),
                                 gridspec_kw={"height_ratios": (3, 1), "hspace": 0.05}, **kw)
        return fig, tuple(axes)
    return plt.subplots(nrows, ncols, figsize=size or (7 * ncols, 5.5 * nrows), **kw)


def label(ax, text: str = "b2bkg simulation", *, loc: int = 0) -> None:
    """Small label in the corner of ``ax`` (the experiment-label slot of mplhep styles)."""
    ax.text(0.02 if loc == 0 else 0.98, 1.01, text, transform=ax.transAxes, ha="left" if loc == 0 else "right",
            va="bottom", fontsize=10, style="italic")


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) atomically and close it."""
    import matplotlib.pyplot as plt

    from b2bkg.io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", bbox_inches="tight")
    plt.close(fig)
    return path
