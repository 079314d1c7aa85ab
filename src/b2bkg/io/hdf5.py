"""HDF5 backend (h5py): chunked, compressed, resizable datasets; streaming reads.

Layout (shared/DESIGN.md): groups ``pxd``, ``ecl``, ``smc``, ``conditions``; variable-length data
flat with an ``offsets`` dataset. Root attributes hold the metadata (``schema``, ``n_events``,
``seed``, ``command``, ``b2bkg_version``, ...).
"""

from __future__ import annotations

import json

import h5py
import numpy as np

from b2bkg.core.errors import SchemaError

from .events import (
    N_CRYSTALS, N_SAMPLES, PXD_FIELDS, SMC_PARTICLE_FIELDS, Conditions, EclWaveforms, PxdDigits, SmcEvents, check_offsets,
)
from .schema import GROUP_ORDER, BackendReader, BackendWriter, check_dtype, parse_schema_tag, unreadable

_HIT_CHUNK = 1 << 16
_COMPRESSION = dict(compression="lzf", shuffle=True)


class H5Writer(BackendWriter):
    """Appends chunks of events to a new HDF5 file."""

    def __init__(self, path):
        self.path = str(path)
        self.f = h5py.File(path, "w")

    def _ext(self, grp, name, data, chunks):
        data = np.asarray(data)
        if name not in grp:
            grp.create_dataset(name, data=data, maxshape=(None, *data.shape[1:]), chunks=chunks, **_COMPRESSION)
            return
        ds = grp[name]
        n = ds.shape[0]
        ds.resize(n + len(data), axis=0)
        ds[n:] = data

    def _ext_offsets(self, grp, offsets):
        if "offsets" not in grp:
            grp.create_dataset("offsets", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(8192,), **_COMPRESSION)
        ds = grp["offsets"]
        last = int(ds[-1])
        self._ext(grp, "offsets", np.asarray(offsets[1:], np.int64) + last, (8192,))

    def append(self, group: str, obj) -> None:
        g = self.f.require_group(group)
        if group == "pxd":
            self._ext_offsets(g, obj.offsets)
            for k in PXD_FIELDS:
                self._ext(g, k, getattr(obj, k), (_HIT_CHUNK,))
        elif group == "ecl":
            self._ext(g, "waveforms", obj.waveforms, (1, N_CRYSTALS, N_SAMPLES))
        elif group == "smc":
            self._ext_offsets(g, obj.offsets)
            for k in SMC_PARTICLE_FIELDS:
                self._ext(g, k, obj.particles[k], (_HIT_CHUNK,))
            for k, v in obj.per_event.items():
                self._ext(g, k, v, (8192,))
        elif group == "conditions":
            self._ext(g, "values", obj.values, (4096, obj.values.shape[1]))
            g.attrs["names"] = json.dumps(list(obj.names))
        else:
            raise SchemaError(self.path, group, "unknown group")

    def finish(self, meta: dict) -> None:
        for k, v in meta.items():
            self.f.attrs[k] = v
        self.f.close()



class H5Reader(BackendReader):
    """Validating, streaming reader of one HDF5 file (only the requested events are read)."""

    format = "hdf5"
    _read_errors = (OSError, KeyError, RuntimeError)

    def __init__(self, path):
        self.path = str(path)
        try:
            self.f = h5py.File(path, "r")
        except FileNotFoundError:
            raise SchemaError(self.path, None, "no such file") from None
        except OSError as e:
            raise SchemaError(self.path, None, f"cannot be opened as HDF5 (truncated or corrupt file?): {str(e).splitlines()[0]}") from None
        try:
            self._validate_open()
        except BaseException:
            self.close()
            raise

    def _validate_open(self):
        try:
            attrs = dict(self.f.attrs)
        except Exception as e:  # pragma: no cover - h5py-specific corruption
            raise unreadable(self.path, None, e) from None
        self.meta = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v) for k, v in attrs.items()}
        data_groups = parse_schema_tag(self.meta.get("schema"), self.path)
        if "n_events" not in self.meta:
            raise SchemaError(self.path, None, "missing root attribute 'n_events'")
        self.n_events = int(self.meta["n_events"])
        present = [g for g in GROUP_ORDER if g in self.f]
        for g in data_groups:
            if g not in self.f:
                raise SchemaError(self.path, g, f"group named by schema {self.meta['schema']!r} is missing")
        self.groups = tuple(present)
        self._offsets: dict[str, np.ndarray] = {}
        for g in self.groups:
            self._check_structure(g)

    # -- structure checks (cheap: dtypes, shapes, offsets) -------------------------------------

    def _ds(self, group, name):
        g = self.f[group]
        if name not in g:
            raise SchemaError(self.path, f"{group}/{name}", "dataset is missing")
        ds = g[name]
        check_dtype(self.path, group, name, ds.dtype)
        return ds

    def _check_structure(self, group):
        n = self.n_events
        try:
            if group in ("pxd", "smc"):
                off = self._ds(group, "offsets")[...]
                if len(off) != n + 1:
                    raise SchemaError(self.path, f"{group}/offsets", f"length {len(off)} != n_events+1 = {n + 1}")
                fields = PXD_FIELDS if group == "pxd" else SMC_PARTICLE_FIELDS
                n_items = None
                for k in fields:
                    ds = self._ds(group, k)
                    if ds.ndim != 1:
                        raise SchemaError(self.path, f"{group}/{k}", f"must be 1-d, has shape {ds.shape}")
                    if n_items is None:
                        n_items = ds.shape[0]
                    elif ds.shape[0] != n_items:
                        raise SchemaError(self.path, f"{group}/{k}", f"length {ds.shape[0]} != {n_items} of the other {group} datasets")
                check_offsets(off, n_items, self.path, group)
                self._offsets[group] = off
                if group == "smc":
                    for k in self.f[group]:
                        if k in fields or k == "offsets":
                            continue
                        ds = self._ds(group, k)
                        if ds.shape != (n,):
                            raise SchemaError(self.path, f"smc/{k}", f"shape {ds.shape} != (n_events,) = ({n},)")
            elif group == "ecl":
                ds = self._ds("ecl", "waveforms")
                if ds.shape != (n, N_CRYSTALS, N_SAMPLES):
                    raise SchemaError(self.path, "ecl/waveforms", f"shape {ds.shape} != (n_events, {N_CRYSTALS}, {N_SAMPLES}) = ({n}, {N_CRYSTALS}, {N_SAMPLES})")
            elif group == "conditions":
                ds = self._ds("conditions", "values")
                names = self._condition_names()
                if ds.ndim != 2 or ds.shape != (n, len(names)):
                    raise SchemaError(self.path, "conditions/values", f"shape {ds.shape} != (n_events, {len(names)} names) = ({n}, {len(names)})")
        except SchemaError:
            raise
        except (OSError, KeyError, RuntimeError) as e:
            raise unreadable(self.path, group, e) from None

    def _condition_names(self):
        raw = self.f["conditions"].attrs.get("names")
        if raw is None:
            raise SchemaError(self.path, "conditions", "missing attribute 'names'")
        try:
            names = json.loads(raw if isinstance(raw, str) else raw.decode()) if isinstance(raw, (str, bytes)) else [str(x) for x in raw]
        except ValueError:
            raise SchemaError(self.path, "conditions", f"attribute 'names' is not a JSON list: {raw!r}") from None
        return tuple(names)

    # -- reading ------------------------------------------------------------------------------
    def _read(self, group, start, stop):
        g = self.f[group]
        if group in ("pxd", "smc"):
            off = self._offsets[group][start : stop + 1]
            a, b = int(off[0]), int(off[-1])
            off = off - a
            if group == "pxd":
                obj = PxdDigits(off, *(g[k][a:b] for k in PXD_FIELDS))
            else:
                parts = {k: g[k][a:b] for k in SMC_PARTICLE_FIELDS}
                per = {k: g[k][start:stop] for k in g if k not in SMC_PARTICLE_FIELDS and k != "offsets"}
                obj = SmcEvents(off, parts, per)
        elif group == "ecl":
            obj = EclWaveforms(g["waveforms"][start:stop])
        elif group == "conditions":
            obj = Conditions(g["values"][start:stop], self._condition_names())
        else:
            raise SchemaError(self.path, group, "unknown group")
        return obj
