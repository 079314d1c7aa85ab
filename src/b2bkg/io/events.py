"""In-memory event containers mirroring the file schemas of shared/DESIGN.md.

Variable-length per-event data is stored flat with an ``offsets`` array (int64, n_events+1), the
layout of an awkward ListOffsetArray: hits of event ``i`` are ``offsets[i]:offsets[i+1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from b2bkg.core.errors import SchemaError

N_SENSORS = 40
N_UCELLS = 250
N_VCELLS = 768
N_CRYSTALS = 8736
N_SAMPLES = 31
ADC_MAX_ECL = 2**18 - 1

SCHEMAS = {
    "pxd": "b2bkg.pxd.digits/1",
    "ecl": "b2bkg.ecl.waveforms/1",
    "smc": "b2bkg.smc.events/1",
}

PXD_FIELDS = {"sensor": np.uint8, "ucell": np.uint16, "vcell": np.uint16, "charge": np.uint8}
SMC_PARTICLE_FIELDS = {
    "pdg": np.int32, "mother": np.int32,
    "px": np.float32, "py": np.float32, "pz": np.float32, "energy": np.float32,
    "vx": np.float32, "vy": np.float32, "vz": np.float32, "time": np.float32,
}
SMC_FLOAT_PARTICLE_FIELDS = ("px", "py", "pz", "energy", "vx", "vy", "vz", "time")

__all__ = [
    "PxdDigits", "EclWaveforms", "SmcEvents", "Conditions", "N_SENSORS", "N_UCELLS", "N_VCELLS",
    "N_CRYSTALS", "N_SAMPLES", "SCHEMAS", "PXD_FIELDS", "SMC_PARTICLE_FIELDS", "check_offsets",
]


def check_offsets(offsets: np.ndarray, n_items: int, file: str, group: str) -> None:
    """Offsets must be int64, start at 0, be non-decreasing and end at the number of items."""
    if offsets.ndim != 1 or len(offsets) < 1:
        raise SchemaError(file, f"{group}/offsets", f"must be a 1-d array of length n_events+1, got shape {offsets.shape}")
    if offsets[0] != 0:
        raise SchemaError(file, f"{group}/offsets", f"must start at 0, starts at {offsets[0]}")
    d = np.diff(offsets)
    if len(d) and d.min() < 0:
        i = int(np.argmax(d < 0))
        raise SchemaError(file, f"{group}/offsets", f"not monotone: offsets[{i + 1}]={offsets[i + 1]} < offsets[{i}]={offsets[i]}")
    if offsets[-1] != n_items:
        raise SchemaError(file, f"{group}/offsets", f"last offset {offsets[-1]} != number of entries {n_items}")


def _concat_offsets(parts: list[np.ndarray]) -> np.ndarray:
    out = [np.zeros(1, np.int64)]
    base = 0
    for o in parts:
        out.append(np.asarray(o[1:], np.int64) + base)
        base += int(o[-1])
    return np.concatenate(out)


@dataclass
class PxdDigits:
    """Zero-suppressed PXD digits of ``n_events`` events.

    Attributes:
        offsets: hit range of each event, shape (n_events+1,), int64.
        sensor: sensor index 0..39 (order 1.1.1, 1.1.2, ..., 2.12.2), shape (n_hits,), uint8.
        ucell: pixel column along u (r-phi) 0..249, shape (n_hits,), uint16.
        vcell: pixel row along v (z) 0..767, shape (n_hits,), uint16.
        charge: ADC counts 1..255 (no zeros stored), shape (n_hits,), uint8.
    """

    offsets: np.ndarray
    sensor: np.ndarray
    ucell: np.ndarray
    vcell: np.ndarray
    charge: np.ndarray

    def __post_init__(self):
        self.offsets = np.asarray(self.offsets, np.int64)
        for name, dt in PXD_FIELDS.items():
            setattr(self, name, np.asarray(getattr(self, name)).astype(dt, copy=False))

    @property
    def n_events(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_hits(self) -> int:
        return int(self.offsets[-1])

    def hits_per_event(self) -> np.ndarray:
        return np.diff(self.offsets)

    def event(self, i: int) -> dict[str, np.ndarray]:
        """Hits of event ``i`` as a dict of arrays (views)."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return {k: getattr(self, k)[a:b] for k in PXD_FIELDS}

    def event_index(self) -> np.ndarray:
        """Event number of each hit, shape (n_hits,), int64."""
        return np.repeat(np.arange(self.n_events, dtype=np.int64), np.diff(self.offsets))

    def slice(self, start: int, stop: int) -> "PxdDigits":
        """Events ``start..stop-1`` (copies of the hit arrays)."""
        a, b = self.offsets[start], self.offsets[stop]
        return PxdDigits(self.offsets[start : stop + 1] - a, *(getattr(self, k)[a:b].copy() for k in PXD_FIELDS))

    @classmethod
    def empty(cls, n_events: int = 0) -> "PxdDigits":
        return cls(np.zeros(n_events + 1, np.int64), *(np.zeros(0, dt) for dt in PXD_FIELDS.values()))

    @classmethod
    def from_events(cls, events: list[dict[str, np.ndarray]]) -> "PxdDigits":
        """Build from a list of per-event dicts with keys sensor, ucell, vcell, charge."""
        counts = [len(e["sensor"]) for e in events]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        arrays = [
            np.concatenate([np.asarray(e[k], dt) for e in events]) if events else np.zeros(0, dt)
            for k, dt in PXD_FIELDS.items()
        ]
        return cls(offsets, *arrays)

    @classmethod
    def concat(cls, parts: list["PxdDigits"]) -> "PxdDigits":
        if not parts:
            return cls.empty()
        return cls(_concat_offsets([p.offsets for p in parts]), *(np.concatenate([getattr(p, k) for p in parts]) for k in PXD_FIELDS))

    def validate(self, file: str = "<memory>") -> None:
        """Raise SchemaError naming the dataset and the problem if anything is out of contract."""
        n = len(self.sensor)
        for k in PXD_FIELDS:
            if len(getattr(self, k)) != n:
                raise SchemaError(file, f"pxd/{k}", f"length {len(getattr(self, k))} != length of pxd/sensor {n}")
        check_offsets(self.offsets, n, file, "pxd")
        for k, hi in (("sensor", N_SENSORS - 1), ("ucell", N_UCELLS - 1), ("vcell", N_VCELLS - 1)):
            a = getattr(self, k)
            if n and a.max() > hi:
                raise SchemaError(file, f"pxd/{k}", f"value {int(a.max())} out of range 0..{hi}")
        if n and self.charge.min() < 1:
            raise SchemaError(file, "pxd/charge", "zero charge stored (digits are zero-suppressed: 1..255)")

    def __eq__(self, other) -> bool:
        return isinstance(other, PxdDigits) and all(
            np.array_equal(getattr(self, k), getattr(other, k)) for k in ("offsets", *PXD_FIELDS)
        )


@dataclass
class EclWaveforms:
    """ECL waveforms.

    Attributes:
        waveforms: ADC counts, shape (n_events, 8736, 31), int32, crystal order = cellId-1.
    """

    waveforms: np.ndarray

    def __post_init__(self):
        self.waveforms = np.asarray(self.waveforms).astype(np.int32, copy=False)

    @property
    def n_events(self) -> int:
        return len(self.waveforms)

    def validate(self, file: str = "<memory>") -> None:
        w = self.waveforms
        if w.ndim != 3 or w.shape[1:] != (N_CRYSTALS, N_SAMPLES):
            raise SchemaError(file, "ecl/waveforms", f"shape {w.shape} is not (n_events, {N_CRYSTALS}, {N_SAMPLES})")
        if w.size and (w.min() < -ADC_MAX_ECL - 1 or w.max() > ADC_MAX_ECL):
            raise SchemaError(file, "ecl/waveforms", f"values outside the 18-bit range ({int(w.min())}..{int(w.max())})")

    @classmethod
    def concat(cls, parts: list["EclWaveforms"]) -> "EclWaveforms":
        return cls(np.concatenate([p.waveforms for p in parts]) if parts else np.zeros((0, N_CRYSTALS, N_SAMPLES), np.int32))

    def slice(self, start: int, stop: int) -> "EclWaveforms":
        return EclWaveforms(self.waveforms[start:stop].copy())

    def __eq__(self, other) -> bool:
        return isinstance(other, EclWaveforms) and np.array_equal(self.waveforms, other.waveforms)


@dataclass
class SmcEvents:
    """Generator-level events for selective MC.

    Attributes:
        offsets: particle range of each event, shape (n_events+1,), int64.
        particles: dict with ``pdg``, ``mother`` (int32; mother index within the event, -1 for a
            primary) and ``px, py, pz, energy`` (GeV, lab) and ``vx, vy, vz`` (cm), ``time`` (ns), float32;
            each shape (n_particles,).
        per_event: dict of per-event arrays, shape (n_events,): ``event_id`` (int64), skim emulator
            outputs (float32), ``passed_<skim>`` (bool), ``pass_prob_<skim>``, ``weight_<skim>`` (float32).
    """

    offsets: np.ndarray
    particles: dict[str, np.ndarray]
    per_event: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        self.offsets = np.asarray(self.offsets, np.int64)
        self.particles = {k: np.asarray(self.particles[k]).astype(dt, copy=False) for k, dt in SMC_PARTICLE_FIELDS.items()}
        pe = {}
        for k, v in self.per_event.items():
            v = np.asarray(v)
            if k == "event_id":
                v = v.astype(np.int64, copy=False)
            elif k.startswith("passed_"):
                v = v.astype(bool, copy=False)
            else:
                v = v.astype(np.float32, copy=False)
            pe[k] = v
        self.per_event = pe

    @property
    def n_events(self) -> int:
        return len(self.offsets) - 1

    def event(self, i: int) -> dict[str, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return {k: v[a:b] for k, v in self.particles.items()}

    def slice(self, start: int, stop: int) -> "SmcEvents":
        a, b = self.offsets[start], self.offsets[stop]
        return SmcEvents(
            self.offsets[start : stop + 1] - a,
            {k: v[a:b].copy() for k, v in self.particles.items()},
            {k: v[start:stop].copy() for k, v in self.per_event.items()},
        )

    def take(self, idx: np.ndarray) -> "SmcEvents":
        """Events at the given indices (in that order)."""
        idx = np.asarray(idx, np.int64)
        counts = np.diff(self.offsets)[idx]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if len(idx):
            part = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx])
        else:
            part = np.zeros(0, np.int64)
        return SmcEvents(offsets, {k: v[part] for k, v in self.particles.items()}, {k: v[idx] for k, v in self.per_event.items()})

    @classmethod
    def concat(cls, parts: list["SmcEvents"]) -> "SmcEvents":
        if not parts:
            return cls(np.zeros(1, np.int64), {k: np.zeros(0, dt) for k, dt in SMC_PARTICLE_FIELDS.items()})
        keys = set(parts[0].per_event)
        for p in parts[1:]:
            if set(p.per_event) != keys:
                raise SchemaError("<memory>", "smc", f"cannot concatenate events with different per-event columns {sorted(keys)} vs {sorted(p.per_event)}")
        return cls(
            _concat_offsets([p.offsets for p in parts]),
            {k: np.concatenate([p.particles[k] for p in parts]) for k in SMC_PARTICLE_FIELDS},
            {k: np.concatenate([p.per_event[k] for p in parts]) for k in sorted(keys)},
        )

    def validate(self, file: str = "<memory>") -> None:
        n = len(self.particles["pdg"])
        for k in SMC_PARTICLE_FIELDS:
            if len(self.particles[k]) != n:
                raise SchemaError(file, f"smc/{k}", f"length {len(self.particles[k])} != length of smc/pdg {n}")
        check_offsets(self.offsets, n, file, "smc")
        for k in SMC_FLOAT_PARTICLE_FIELDS:
            a = self.particles[k]
            if n and not np.isfinite(a).all():
                i = int(np.argmax(~np.isfinite(a)))
                raise SchemaError(file, f"smc/{k}", f"non-finite value {a[i]} at particle {i}")
        m = self.particles["mother"]
        if n:
            size = np.repeat(np.diff(self.offsets), np.diff(self.offsets))
            bad = (m < -1) | (m >= size)
            if bad.any():
                i = int(np.argmax(bad))
                raise SchemaError(file, "smc/mother", f"mother index {m[i]} of particle {i} outside its event")
        for k, v in self.per_event.items():
            if len(v) != self.n_events:
                raise SchemaError(file, f"smc/{k}", f"length {len(v)} != n_events {self.n_events}")
            if k.startswith(("pass_prob_", "weight_")) and len(v) and not np.isfinite(v).all():
                raise SchemaError(file, f"smc/{k}", "non-finite value")

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, SmcEvents)
            and np.array_equal(self.offsets, other.offsets)
            and all(np.array_equal(self.particles[k], other.particles[k]) for k in SMC_PARTICLE_FIELDS)
            and set(self.per_event) == set(other.per_event)
            and all(np.array_equal(self.per_event[k], other.per_event[k], equal_nan=self.per_event[k].dtype.kind == "f") for k in self.per_event)
        )


@dataclass
class Conditions:
    """Per-event beam conditions: ``values`` shape (n_events, K) float32; ``names`` the K columns."""

    values: np.ndarray
    names: tuple[str, ...]

    def __post_init__(self):
        self.values = np.asarray(self.values, np.float32).reshape(len(self.values), -1)
        self.names = tuple(self.names)

    @property
    def n_events(self) -> int:
        return len(self.values)

    def validate(self, file: str = "<memory>") -> None:
        if self.values.shape[1] != len(self.names):
            raise SchemaError(file, "conditions/values", f"{self.values.shape[1]} columns but {len(self.names)} names")
        if self.values.size and not np.isfinite(self.values).all():
            raise SchemaError(file, "conditions/values", "non-finite value")

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]

    @classmethod
    def concat(cls, parts: list["Conditions"]) -> "Conditions":
        return cls(np.concatenate([p.values for p in parts]), parts[0].names)

    def slice(self, start: int, stop: int) -> "Conditions":
        return Conditions(self.values[start:stop].copy(), self.names)

    def __eq__(self, other) -> bool:
        return isinstance(other, Conditions) and self.names == other.names and np.array_equal(self.values, other.values)
