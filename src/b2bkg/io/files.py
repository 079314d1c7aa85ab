"""Format-independent file access: :class:`FileWriter` and :func:`open_file`.

The format is chosen by the suffix (``.h5``/``.hdf5`` HDF5, ``.root`` ROOT). Writers append chunks
of events and write to a temporary name that is renamed when the file is complete; readers validate
the schema and stream (reading event 5 of a 100 000-event file reads only event 5).

Example:
    >>> import numpy as np, tempfile, os
    >>> from b2bkg.io import FileWriter, open_file, PxdDigits
    >>> d = PxdDigits([0, 1], [3], [10], [20], [30])
    >>> path = os.path.join(tempfile.mkdtemp(), "x.h5")
    >>> with FileWriter(path, seed=1) as w:
    ...     w.append(pxd=d)
    >>> with open_file(path) as f:
    ...     f.n_events, int(f.read_pxd().charge[0])
    (1, 30)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from b2bkg.core.errors import SchemaError

from .atomic import temp_name_for
from .events import Conditions, EclWaveforms, PxdDigits, SmcEvents
from .schema import GROUP_ORDER, file_format, make_meta

__all__ = ["FileWriter", "DataFile", "open_file", "read_pxd", "read_ecl", "read_smc", "read_conditions", "write_file"]


class FileWriter:
    """Append chunks of events to a new b2bkg file, atomically.

    Args:
        path: output file; ``.h5``/``.hdf5`` or ``.root``.
        seed: master seed of the command that produced the data (recorded).
        command: the command line (recorded).
        attrs: extra root attributes (scalars; others stored as JSON).

    Every :meth:`append` must give the same groups with the same number of events each.
    """

    def __init__(self, path, *, seed=None, command: str = "", attrs: dict | None = None):
        self.path = Path(path)
        self.format = file_format(self.path)
        self.seed, self.command, self.attrs = seed, command, dict(attrs or {})
        self.n_events = 0
        self.groups: tuple[str, ...] | None = None
        self._backend = None
        self._tmp = temp_name_for(self.path)

    def __enter__(self) -> "FileWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == "hdf5":
            from .hdf5 import H5Writer

            self._backend = H5Writer(self._tmp)
        else:
            from .root import RootWriter

            self._backend = RootWriter(self._tmp)
        return self

    def append(self, *, pxd: PxdDigits | None = None, ecl: EclWaveforms | None = None, smc: SmcEvents | None = None,
               conditions: Conditions | None = None) -> None:
        """Append one chunk of events (each given group holds the same events)."""
        given = {g: o for g, o in (("pxd", pxd), ("ecl", ecl), ("smc", smc), ("conditions", conditions)) if o is not None}
        if not given:
            raise SchemaError(str(self.path), None, "append() needs at least one group")
        groups = tuple(g for g in GROUP_ORDER if g in given)
        if self.groups is None:
            self.groups = groups
        elif groups != self.groups:
            raise SchemaError(str(self.path), None, f"append() got groups {groups}, earlier chunks had {self.groups}")
        ns = {g: o.n_events for g, o in given.items()}
        if len(set(ns.values())) != 1:
            raise SchemaError(str(self.path), None, f"groups of one chunk hold different numbers of events: {ns}")
        for g, o in given.items():
            o.validate(str(self.path))
            self._backend.append(g, o)
        self.n_events += next(iter(ns.values()))

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._backend.abort()
            if self._tmp.exists():
                self._tmp.unlink()
            return False
        try:
            meta = make_meta(self.groups or (), self.n_events, self.seed, self.command, self.attrs)
            self._backend.finish(meta)
            os.replace(self._tmp, self.path)
        except BaseException:
            if self._tmp.exists():
                self._tmp.unlink()
            raise
        return False


def write_file(path, *, seed=None, command: str = "", attrs=None, **groups) -> Path:
    """Write whole containers in one call (``pxd=``, ``ecl=``, ``smc=``, ``conditions=``)."""
    with FileWriter(path, seed=seed, command=command, attrs=attrs) as w:
        w.append(**groups)
    return Path(path)


class DataFile:
    """A validated b2bkg file opened for streaming reads.

    Attributes:
        path, format ('hdf5'|'root'), meta (dict: schema, n_events, seed, command, ...),
        groups (tuple of groups present), n_events.
    """

    def __init__(self, path):
        self.path = Path(path)
        fmt = file_format(self.path)
        if not self.path.exists():
            raise SchemaError(str(self.path), None, "no such file")
        if fmt == "hdf5":
            from .hdf5 import H5Reader

            self._r = H5Reader(self.path)
        else:
            from .root import RootReader

            self._r = RootReader(self.path)
        self.format = fmt
        self.meta = self._r.meta
        self.groups = self._r.groups
        self.n_events = self._r.n_events

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        self._r.close()

    def has(self, group: str) -> bool:
        return group in self.groups

    def _range(self, start, stop):
        """Event range; ``stop`` past the end is clamped (slice semantics), a bad ``start`` raises."""
        stop = self.n_events if stop is None else min(int(stop), self.n_events)
        if not (0 <= start <= stop <= self.n_events):
            raise SchemaError(str(self.path), None, f"event range {start}:{stop} outside 0:{self.n_events}")
        return int(start), int(stop)

    def read(self, group: str, start: int = 0, stop: int | None = None):
        if group not in self.groups:
            raise SchemaError(str(self.path), group, f"group not in file (has: {', '.join(self.groups) or 'none'})")
        a, b = self._range(start, stop)
        return self._r.read(group, a, b)

    def iter(self, group: str, chunk: int = 1000, start: int = 0, stop: int | None = None) -> Iterator:
        a, b = self._range(start, stop)
        if chunk < 1:
            raise SchemaError(str(self.path), group, f"chunk size {chunk} must be >= 1")
        for s in range(a, b, chunk):
            yield self.read(group, s, min(b, s + chunk))

    def read_pxd(self, start=0, stop=None) -> PxdDigits:
        return self.read("pxd", start, stop)

    def iter_pxd(self, chunk=1000, start=0, stop=None):
        return self.iter("pxd", chunk, start, stop)

    def read_ecl(self, start=0, stop=None) -> EclWaveforms:
        return self.read("ecl", start, stop)

    def iter_ecl(self, chunk=50, start=0, stop=None):
        return self.iter("ecl", chunk, start, stop)

    def read_smc(self, start=0, stop=None) -> SmcEvents:
        return self.read("smc", start, stop)

    def iter_smc(self, chunk=10000, start=0, stop=None):
        return self.iter("smc", chunk, start, stop)

    def read_conditions(self, start=0, stop=None) -> Conditions | None:
        return self.read("conditions", start, stop) if "conditions" in self.groups else None


def open_file(path) -> DataFile:
    """Open and validate a b2bkg file (HDF5 or ROOT by suffix)."""
    return DataFile(path)


def _read(path, group, start, stop):
    with open_file(path) as f:
        return f.read(group, start, stop)


def read_pxd(path, start=0, stop=None) -> PxdDigits:
    return _read(path, "pxd", start, stop)


def read_ecl(path, start=0, stop=None) -> EclWaveforms:
    return _read(path, "ecl", start, stop)


def read_smc(path, start=0, stop=None) -> SmcEvents:
    return _read(path, "smc", start, stop)


def read_conditions(path, start=0, stop=None):
    """``(values (n, K) float32, names)`` of the file's conditions group; error if it has none."""
    with open_file(path) as f:
        c = f.read_conditions(start, stop)
        if c is None:
            raise SchemaError(str(path), "conditions", "file has no conditions group")
        return c.values, c.names


_STANDARD_META = ("schema", "n_events", "seed", "command", "b2bkg_version", "git")


def merge(srcs, dst, *, chunk: int = 100, command: str = "", allow_mixed: bool = False) -> Path:
    """Concatenate the events of ``srcs`` (in order) into ``dst`` (format by suffix), chunk by chunk.

    The inputs must hold the same groups (and, for ``smc``, the same per-event datasets, which the
    writer checks); files from different truth-simulator versions (``simulator_hash``) are refused
    unless ``allow_mixed``. The output keeps the first file's attributes, its seed if every input
    has the same seed (else none), and records ``merged_from`` (file, seed, n_events of each). SMC
    ``event_id`` values are kept as they are: events of files simulated with different seeds are
    told apart by their position, not by ``event_id``.
    """
    from b2bkg.core.errors import ConfigError
    from b2bkg.core.progress import progress_bar

    srcs = [Path(s) for s in srcs]
    if not srcs:
        raise ConfigError("merge: no input files given")
    if Path(dst).resolve() in {s.resolve() for s in srcs}:
        raise ConfigError(f"merge: output {dst} is also an input")
    metas, groups = [], None
    for s in srcs:
        with open_file(s) as f:
            metas.append(dict(f.meta))
            if groups is None:
                groups = f.groups
            elif f.groups != groups:
                raise SchemaError(str(s), None, f"holds groups {f.groups}, {srcs[0]} holds {groups}: cannot merge")
    hashes = {m.get("simulator_hash") for m in metas if m.get("simulator_hash")}
    if len(hashes) > 1 and not allow_mixed:
        raise SchemaError(str(srcs[-1]), None, f"inputs come from different simulator versions {sorted(hashes)} "
                          "(pass allow_mixed / --allow-mixed to merge anyway)")
    attrs = {k: v for k, v in metas[0].items() if k not in _STANDARD_META}
    seeds = {m.get("seed") for m in metas}
    seed = metas[0].get("seed") if len(seeds) == 1 else None
    if len(srcs) == 1:
        attrs["converted_from"] = str(srcs[0])
    else:
        attrs["merged_from"] = [{"file": str(s), "seed": m.get("seed"), "n_events": m.get("n_events")}
                                for s, m in zip(srcs, metas)]
        if len(hashes) > 1:
            attrs["simulator_hash"] = "mixed:" + ",".join(sorted(hashes))
    with FileWriter(dst, seed=seed, command=command or metas[0].get("command", ""), attrs=attrs) as w:
        total = sum(int(m.get("n_events", 0)) for m in metas)
        if total == 0 and groups:
            with open_file(srcs[0]) as f:  # keep the (empty) structure
                w.append(**{g: f.read(g, 0, 0) for g in f.groups})
        with progress_bar(total, desc="merge" if len(srcs) > 1 else "convert", unit="event") as bar:
            for s in srcs:
                with open_file(s) as f:
                    for a in range(0, f.n_events, chunk):
                        b = min(f.n_events, a + chunk)
                        w.append(**{g: f.read(g, a, b) for g in f.groups})
                        bar.update(b - a)
    return Path(dst)


def convert(src, dst, *, chunk: int = 100, command: str = "") -> Path:
    """Copy every group of ``src`` into ``dst`` (format by suffix), chunk by chunk."""
    return merge([src], dst, chunk=chunk, command=command)
