"""Atomic output: write to a temporary name in the same folder, rename when complete.

An interrupted write (exception, SIGKILL) never leaves a file under the final name. Every writer of
the project (data files, plots, metrics, run folders, checkpoints) goes through here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "temp_name_for", "write_text_atomic"]


def _file_mode() -> int:
    """Permissions of a newly created file under the current umask (mkstemp would give 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _file_mode()


def temp_name_for(path: str | Path) -> Path:
    """A fresh, hidden temporary sibling of ``path`` keeping its suffix (``.x.h5.<random>.h5``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=f".tmp{p.suffix}", dir=p.parent)
    os.close(fd)
    os.unlink(tmp)  # writers (h5py, uproot) create the file themselves
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path; on success it replaces ``path``, on error it is removed.

    Works for files and for directories (an old directory under the final name is replaced).
    """
    final = Path(path)
    tmp = temp_name_for(final)
    try:
        yield tmp
        if tmp.is_dir():
            if final.is_dir():
                shutil.rmtree(final)
        elif tmp.exists():
            os.chmod(tmp, _MODE)
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
