"""ROOT backend (uproot): one TTree per group, one entry per event, jagged branches.

``pxd``: counter ``n_hits`` + jagged ``sensor, ucell, vcell, charge``; ``smc``: counter
``n_particles`` + jagged particle branches + flat per-event branches; ``ecl``: a fixed-shape
branch ``waveforms`` (8736 x 31 int32 per entry); ``conditions``: one float32 branch per name. The
metadata is a TObjString ``b2bkg_meta`` holding JSON. Trees are created with ``mktree`` and filled
with ``extend`` in blocks of events (uproot would otherwise write an RNTuple), ZSTD(1) compressed.
"""

from __future__ import annotations

import json
import os

import awkward as ak
import numpy as np
import uproot

from b2bkg.core.errors import SchemaError

from .events import (
    N_CRYSTALS, N_SAMPLES, PXD_FIELDS, SMC_PARTICLE_FIELDS, Conditions, EclWaveforms, PxdDigits, SmcEvents,
)
from .schema import GROUP_ORDER, BackendReader, BackendWriter, check_dtype, parse_schema_tag, smc_per_event_dtype, unreadable

_COUNTERS = {"pxd": "n_hits", "smc": "n_particles"}
_BLOCK = {"pxd": 100, "smc": 100, "ecl": 10, "conditions": 1000}


def _jagged(values: np.ndarray, offsets: np.ndarray) -> ak.Array:
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), ak.contents.NumpyArray(values)))


class RootWriter(BackendWriter):
    def __init__(self, path):
        self.path = str(path)
        self.f = uproot.recreate(path, compression=uproot.ZSTD(1))
        self.trees = {}

    def _tree(self, group, obj):
        if group in self.trees:
            return self.trees[group]
        if group == "pxd":
            types = {k: f"var * {np.dtype(dt).name}" for k, dt in PXD_FIELDS.items()}
        elif group == "smc":
            types = {k: f"var * {np.dtype(dt).name}" for k, dt in SMC_PARTICLE_FIELDS.items()}
            for k in obj.per_event:
                types[k] = np.dtype(smc_per_event_dtype(k))
        elif group == "ecl":
            types = {"waveforms": np.dtype(("i4", (N_CRYSTALS, N_SAMPLES)))}
        elif group == "conditions":
            types = {n: np.dtype("f4") for n in obj.names}
        else:
            raise SchemaError(self.path, group, "unknown group")
        counter = _COUNTERS.get(group)
        kw = {"counter_name": (lambda name, c=counter: c)} if counter else {}
        self.trees[group] = self.f.mktree(group, types, **kw)
        return self.trees[group]

    def append(self, group: str, obj) -> None:
        tree = self._tree(group, obj)
        n = obj.n_events
        block = _BLOCK[group]
        for a in range(0, n, block):
            b = min(n, a + block)
            if group == "pxd":
                sub = obj.slice(a, b)
                tree.extend({k: _jagged(getattr(sub, k), sub.offsets) for k in PXD_FIELDS})
            elif group == "smc":
                sub = obj.slice(a, b)
                data = {k: _jagged(sub.particles[k], sub.offsets) for k in SMC_PARTICLE_FIELDS}
                data.update({k: v for k, v in sub.per_event.items()})
                tree.extend(data)
            elif group == "ecl":
                tree.extend({"waveforms": obj.waveforms[a:b]})
            elif group == "conditions":
                tree.extend({name: obj.values[a:b, i] for i, name in enumerate(obj.names)})

    def finish(self, meta: dict) -> None:
        self.f["b2bkg_meta"] = json.dumps(meta)
        self.f.close()



class RootReader(BackendReader):
    """Validating, streaming reader of one ROOT file written in the b2bkg layout."""

    format = "root"

    def __init__(self, path):
        self.path = str(path)
        try:
            self.f = uproot.open(path)
            size = os.path.getsize(path)
            if size < self.f.file.fEND:
                raise SchemaError(self.path, None, f"truncated file: {size} bytes on disk, the ROOT header says {self.f.file.fEND}")
            keys = {k.split(";")[0] for k in self.f.keys(recursive=False)}
        except FileNotFoundError:
            raise SchemaError(self.path, None, "no such file") from None
        except SchemaError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise SchemaError(self.path, None, f"cannot be opened as ROOT (truncated or corrupt file?): {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
        try:
            self._validate_open(keys)
        except BaseException:
            self.close()
            raise

    def _validate_open(self, keys):
        if "b2bkg_meta" not in keys:
            raise SchemaError(self.path, None, "missing TObjString 'b2bkg_meta' (not a b2bkg file, or the write was interrupted)")
        try:
            self.meta = json.loads(str(self.f["b2bkg_meta"]))
        except Exception as e:
            raise unreadable(self.path, "b2bkg_meta", e) from None
        data_groups = parse_schema_tag(self.meta.get("schema"), self.path)
        self.n_events = int(self.meta.get("n_events", -1))
        for g in data_groups:
            if g not in keys:
                raise SchemaError(self.path, g, f"TTree named by schema {self.meta['schema']!r} is missing")
        self.groups = tuple(g for g in GROUP_ORDER if g in keys)
        self.trees = {}
        for g in self.groups:
            try:
                t = self.f[g]
                n = t.num_entries
            except Exception as e:
                raise unreadable(self.path, g, e) from None
            if n != self.n_events:
                raise SchemaError(self.path, g, f"{n} entries but n_events = {self.n_events}")
            self.trees[g] = t
            self._check_branches(g, t)

    def _check_branches(self, group, tree):
        keys = list(tree.keys())
        if group == "pxd":
            need = list(PXD_FIELDS)
        elif group == "smc":
            need = list(SMC_PARTICLE_FIELDS)
        elif group == "ecl":
            need = ["waveforms"]
        else:
            need = []
        for k in need:
            if k not in keys:
                raise SchemaError(self.path, f"{group}/{k}", "branch is missing")
        if group == "conditions":
            for k in keys:
                check_dtype(self.path, group, "values", tree[k].interpretation.numpy_dtype if hasattr(tree[k].interpretation, "numpy_dtype") else np.float32)

    def _read(self, group: str, start: int, stop: int):
        tree = self.trees[group]
        if group in ("pxd", "smc"):
            fields = PXD_FIELDS if group == "pxd" else SMC_PARTICLE_FIELDS
            names = [k for k in tree.keys() if k != _COUNTERS[group]]
            arrs = tree.arrays(names, entry_start=start, entry_stop=stop, library="ak", how=dict)
            flat = {}
            offsets = None
            for k in fields:
                counts = ak.to_numpy(ak.num(arrs[k], axis=1)).astype(np.int64)
                content = ak.to_numpy(ak.flatten(arrs[k], axis=1))
                check_dtype(self.path, group, k, content.dtype)
                o = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
                if offsets is None:
                    offsets = o
                elif not np.array_equal(o, offsets):
                    raise SchemaError(self.path, f"{group}/{k}", "jagged lengths differ from the other branches of the tree")
                flat[k] = content
            if group == "pxd":
                obj = PxdDigits(offsets, *(flat[k] for k in PXD_FIELDS))
            else:
                per = {}
                for k in names:
                    if k in fields:
                        continue
                    v = ak.to_numpy(arrs[k])
                    check_dtype(self.path, group, k, v.dtype)
                    per[k] = v
                obj = SmcEvents(offsets, flat, per)
        elif group == "ecl":
            w = tree["waveforms"].array(entry_start=start, entry_stop=stop, library="np")
            check_dtype(self.path, "ecl", "waveforms", w.dtype)
            if w.shape[1:] != (N_CRYSTALS, N_SAMPLES):
                raise SchemaError(self.path, "ecl/waveforms", f"shape {w.shape} is not (n, {N_CRYSTALS}, {N_SAMPLES})")
            obj = EclWaveforms(w)
        elif group == "conditions":
            names = list(tree.keys())
            cols = tree.arrays(names, entry_start=start, entry_stop=stop, library="np")
            for k in names:
                check_dtype(self.path, group, "values", cols[k].dtype)
            values = np.stack([cols[k] for k in names], axis=1) if names else np.zeros((stop - start, 0), np.float32)
            obj = Conditions(values, names)
        else:
            raise SchemaError(self.path, group, "unknown group")
        return obj

