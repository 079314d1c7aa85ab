"""``b2bkg info``: a summary of a data file."""

from __future__ import annotations

import os

import numpy as np

from .files import open_file


def info(path) -> dict:
    """Schema, events, hits/waveforms/particles per event and size of a b2bkg file."""
    out: dict = {"file": str(path), "size_bytes": os.path.getsize(path)}
    with open_file(path) as f:
        out.update(format=f.format, schema=f.meta.get("schema"), n_events=f.n_events, groups=list(f.groups),
                   seed=f.meta.get("seed"), command=f.meta.get("command"), b2bkg_version=f.meta.get("b2bkg_version"),
                   git=f.meta.get("git"), simulator_hash=f.meta.get("simulator_hash"))
        n = f.n_events
        out["size_per_event_bytes"] = out["size_bytes"] / n if n else None
        for g in ("pxd", "smc"):
            if g in f.groups:
                counts = np.diff(f._r._offsets[g]) if f.format == "hdf5" else None
                if counts is None:
                    counts = np.concatenate([np.diff(c.offsets) for c in f.iter(g, 1000)]) if n else np.zeros(0)
                key = "hits" if g == "pxd" else "particles"
                out[f"{g}_{key}_per_event"] = {
                    "mean": float(counts.mean()) if n else 0.0, "min": int(counts.min()) if n else 0, "max": int(counts.max()) if n else 0,
                }
        if "ecl" in f.groups:
            out["ecl_waveforms_per_event"] = 8736
        if "conditions" in f.groups and n:
            c = f.read_conditions(0, min(n, 10000))
            out["conditions_mean"] = {name: float(c.values[:, i].mean()) for i, name in enumerate(c.names)}
    return out


def format_info(d: dict) -> str:
    lines = []
    for k, v in d.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items())
        lines.append(f"{k:28s} {v}")
    return "\n".join(lines)
