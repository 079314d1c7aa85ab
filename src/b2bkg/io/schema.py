"""The file contract: groups, dataset dtypes, metadata, and their validation.

See shared/DESIGN.md. Every reader validates what it reads and raises
:class:`b2bkg.core.errors.SchemaError` naming the file, the dataset and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from b2bkg import __version__
from b2bkg.core.errors import SchemaError
from b2bkg.core.provenance import git_hash

from .events import N_CRYSTALS, N_SAMPLES, PXD_FIELDS, SCHEMAS, SMC_PARTICLE_FIELDS

GROUP_ORDER = ("pxd", "ecl", "smc", "conditions")
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")
ROOT_SUFFIXES = (".root",)

__all__ = ["BackendReader", "BackendWriter", "unreadable", "file_format", "schema_tag", "parse_schema_tag", "make_meta", "check_dtype", "GROUP_ORDER", "smc_per_event_dtype"]


def file_format(path: str | Path) -> str:
    """'hdf5' or 'root' from the file suffix; anything else is a one-line error."""
    s = Path(path).suffix.lower()
    if s in H5_SUFFIXES:
        return "hdf5"
    if s in ROOT_SUFFIXES:
        return "root"
    raise SchemaError(str(path), None, f"unknown file suffix {s!r} (use .h5/.hdf5 for HDF5 or .root for ROOT)")


def schema_tag(groups) -> str:
    """Root ``schema`` attribute: the tags of the data groups present, joined by '+'."""
    tags = [SCHEMAS[g] for g in GROUP_ORDER if g in groups and g in SCHEMAS]
    return "+".join(tags) if tags else "b2bkg.conditions/1"


def parse_schema_tag(tag, file: str) -> tuple[str, ...]:
    """Data groups named by a schema tag; unknown tags raise."""
    if isinstance(tag, bytes):
        tag = tag.decode()
    if not isinstance(tag, str) or not tag:
        raise SchemaError(file, None, "missing root attribute 'schema' (not a b2bkg file)")
    inv = {v: k for k, v in SCHEMAS.items()}
    groups = []
    for part in tag.split("+"):
        if part == "b2bkg.conditions/1":
            continue
        if part not in inv:
            known = ", ".join(sorted(SCHEMAS.values()))
            raise SchemaError(file, None, f"unknown schema tag {part!r} (known: {known})")
        groups.append(inv[part])
    return tuple(groups)




def make_meta(groups, n_events: int, seed, command: str, attrs: dict | None = None) -> dict:
    """Metadata recorded in every file (HDF5 root attributes; ROOT TObjString ``b2bkg_meta``)."""
    meta = {
        "schema": schema_tag(groups),
        "n_events": int(n_events),
        "seed": -1 if seed is None else int(seed),
        "command": command or "",
        "b2bkg_version": __version__,
        "git": git_hash(),
    }
    for k, v in (attrs or {}).items():
        meta[k] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
    return meta


def smc_per_event_dtype(name: str):
    if name == "event_id":
        return np.int64
    if name.startswith("passed_"):
        return np.bool_
    return np.float32


def expected_dtype(group: str, name: str):
    if group == "pxd":
        return np.int64 if name == "offsets" else PXD_FIELDS.get(name)
    if group == "ecl":
        return np.int32 if name == "waveforms" else None
    if group == "conditions":
        return np.float32 if name == "values" else None
    if group == "smc":
        if name == "offsets":
            return np.int64
        if name in SMC_PARTICLE_FIELDS:
            return SMC_PARTICLE_FIELDS[name]
        return smc_per_event_dtype(name)
    return None


def check_dtype(file: str, group: str, name: str, dtype) -> None:
    exp = expected_dtype(group, name)
    if exp is not None and np.dtype(dtype) != np.dtype(exp):
        raise SchemaError(file, f"{group}/{name}", f"dtype {np.dtype(dtype)} where {np.dtype(exp)} is required")


ECL_SHAPE = (N_CRYSTALS, N_SAMPLES)


def unreadable(file: str, dataset, exc: BaseException) -> SchemaError:
    """The one-line error for a dataset that cannot be read (truncated or corrupt file)."""
    msg = str(exc).splitlines()[0][:200] if str(exc) else ""
    return SchemaError(file, dataset, f"unreadable, the file is truncated or corrupt ({type(exc).__name__}: {msg})")


class BackendWriter:
    """What the HDF5 and ROOT writers share: ``self.f`` is the open file."""

    def abort(self) -> None:
        """Close the half-written file without raising (the atomic writer then deletes it)."""
        try:
            self.f.close()
        except Exception:
            pass


class BackendReader:
    """What the HDF5 and ROOT readers share: ``read`` wraps the backend's ``_read`` so any library
    error becomes a one-line :class:`SchemaError`, and validates the container it returns."""

    path: str
    #: library exceptions that mean "this part of the file cannot be read"
    _read_errors: tuple[type[BaseException], ...] = (Exception,)

    def _read(self, group: str, start: int, stop: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, group: str, start: int, stop: int):
        """Events ``[start, stop)`` of ``group`` as a validated container."""
        try:
            obj = self._read(group, start, stop)
        except SchemaError:
            raise
        except self._read_errors as e:
            raise unreadable(self.path, group, e) from None
        obj.validate(self.path)
        return obj

    def close(self) -> None:
        f = getattr(self, "f", None)
        if f is not None:
            f.close()
