"""Frozen-dataclass configs loaded from YAML, validated with one-line errors.

A component declares its configuration as a ``@dataclass(frozen=True)``; fields carry units in
their names (``threshold_adu``, ``tick_us``). :func:`from_dict` builds it from a mapping (YAML),
rejecting unknown keys and wrong types; ``__post_init__`` of the dataclass checks ranges (use
:func:`check_range`). :func:`apply_overrides` applies ``--set key=value`` strings (dotted keys
reach nested dataclasses), :func:`to_dict` / :func:`save_yaml` write the resolved config.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class C:
    ...     lr: float = 1e-4
    ...     steps: int = 10
    >>> apply_overrides(C(), ["steps=20"]).steps
    20
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

#: exponent floats without a dot, which YAML 1.1 (PyYAML) leaves as strings
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

T = TypeVar("T")

__all__ = ["from_dict", "to_dict", "load_yaml", "save_yaml", "apply_overrides", "check_range", "load_config"]


def check_range(name: str, value, lo=None, hi=None, unit: str = "") -> None:
    """Raise ConfigError if ``value`` is outside ``[lo, hi]`` (either bound may be None)."""
    u = f" {unit}" if unit else ""
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else f"{lo}"
        hi_s = "inf" if hi is None else f"{hi}"
        raise ConfigError(f"{name}: {value}{u} is out of range [{lo_s}, {hi_s}]{u}")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, name: str):
    """Check/convert ``value`` to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{name}: {value!r} is not of type {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{name}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: {value!r} is not a list")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{name}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        conv = [_coerce(v, args[0], f"{name}[{i}]") if args else v for i, v in enumerate(value)]
        return tuple(conv) if origin is tuple else conv
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: {value!r} is not a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=f"{name}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: {value!r} is not a bool (true/false)")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name}: {value!r} is not an integer")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads "1e-6" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: {value!r} is not a number")
        v = float(value)
        if v != v:
            raise ConfigError(f"{name}: NaN is not allowed")
        return v
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: {value!r} is not a string")
        return value
    return value


def from_dict(cls: type[T], data: dict | None, prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``; unknown keys and wrong types raise."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key for {cls.__name__} (known: {', '.join(sorted(fields))})")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{cls.__name__}: {e}") from None


def to_dict(cfg) -> dict:
    """Plain-YAML-able dict of a (nested) config dataclass (tuples become lists)."""

    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with a one-line error on syntax problems."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def save_yaml(cfg, path: str | Path) -> None:
    """Write the resolved config atomically."""
    from b2bkg.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, sort_keys=False))


def _parse_scalar(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...] | None) -> T:
    """Apply ``key=value`` overrides (values parsed as YAML; dotted keys for nested configs)."""
    d = to_dict(cfg)
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        node, cls_node = d, type(cfg)
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"--set {key}: unknown key {p!r} for {cls_node.__name__}")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"--set {key}: unknown key (known: {', '.join(sorted(node))})")
        node[parts[-1]] = _parse_scalar(text)
    return from_dict(type(cfg), d)


def load_config(cls: type[T], source: str | Path | dict | None = None, overrides=None, presets_dir: Path | None = None) -> T:
    """Config from a preset name (``small``/``paper`` in ``presets_dir``), a YAML file or a dict,
    then ``--set`` overrides."""
    if source is None:
        data: dict = {}
    elif isinstance(source, dict):
        data = source
    else:
        p = Path(source)
        if not p.suffix and presets_dir is not None:
            cand = presets_dir / f"{source}.yaml"
            if not cand.is_file():
                names = sorted(x.stem for x in presets_dir.glob("*.yaml"))
                raise ConfigError(f"--config {source}: no such preset (available: {', '.join(names)})")
            p = cand
        data = load_yaml(p)
    cfg = from_dict(cls, data)
    return apply_overrides(cfg, overrides) if overrides else cfg
