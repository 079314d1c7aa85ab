"""Atomic output: write to a temporary name in the same folder, rename when complete.

An interrupted write (exception, SIGKILL) never leaves a file under the final name.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "temp_name_for"]


def temp_name_for(path: str | Path) -> Path:
    """Hidden temporary sibling of ``path`` that keeps its suffix (``.x.h5.tmp-<pid>.h5``)."""
    p = Path(path)
    return p.with_name(f".{p.stem}.tmp-{os.getpid()}{p.suffix}")


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path; on success it replaces ``path``, on error it is removed.

    Works for files and for directories (a directory is swapped in after removing an old one).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name_for(final)
    try:
        yield tmp
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise
    if tmp.is_dir() and final.is_dir():
        shutil.rmtree(final)
    os.replace(tmp, final)
