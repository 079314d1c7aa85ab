"""Progress bars (tqdm), silenced globally with ``--quiet`` or ``B2BKG_QUIET=1``."""

from __future__ import annotations

import os
from contextlib import contextmanager

from tqdm.auto import tqdm

_quiet = os.environ.get("B2BKG_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    """Switch all progress bars off (True) or on (False)."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it", **kw):
    """A tqdm bar that respects the global quiet switch."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=_quiet, dynamic_ncols=True, leave=False, **kw)


@contextmanager
def progress_bar(total: int, desc: str = "", unit: str = "it"):
    bar = progress(total=total, desc=desc, unit=unit)
    try:
        yield bar
    finally:
        bar.close()
