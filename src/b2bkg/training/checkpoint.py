"""Run folders and checkpoints: safetensors + YAML/JSON + ``torch.load(weights_only=True)``.

Run folder (written by rank 0 only; every file written to a temporary name, then ``os.replace``)::

    RUN_DIR/
      config.yaml         resolved: model, seed, version, git, data/val paths, world_size, config
      weights.safetensors final weights of every module ("<module>.<param>"), EMA weights where used
      best.safetensors    weights at the best validation metric, + best.json (step, metric, value)
      checkpoint/         step-XXXXXXXX.safetensors (raw weights), step-XXXXXXXX.ema.safetensors,
                          step-XXXXXXXX.pt (optimizer, step, data position, RNG of every rank, best),
                          latest.json (written last: names the complete checkpoint)
      log.csv, val.csv    losses every ``log_every`` steps; validation metrics
      meta.json           status, steps, wall time, world size, device, parameter counts

Loading never executes code: weights through safetensors, state through
``torch.load(weights_only=True)``, config and metadata through YAML/JSON.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from b2bkg.core.errors import ModelError
from b2bkg.core.provenance import git_hash  # noqa: F401  (re-exported: runs record it)

__all__ = [
    "atomic_path", "write_json", "read_json", "write_yaml", "save_modules", "load_modules", "module_tensors",
    "save_checkpoint", "load_checkpoint", "CsvLog", "git_hash", "RUN_FORMAT",
]

RUN_FORMAT = "b2bkg.run/1"


from b2bkg.io.atomic import atomic_path  # noqa: E402  (one atomic writer for the project)


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: cannot read JSON ({e})") from None


def write_yaml(path: str | Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False))


def module_tensors(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """Flat ``{"<module>.<key>": tensor}`` of the modules' state dicts (CPU, contiguous copies)."""
    out = {}
    for name, m in modules.items():
        for k, v in m.state_dict().items():
            out[f"{name}.{k}"] = v.detach().to("cpu", copy=True).contiguous()
    return out


def save_modules(path: str | Path, modules: dict[str, torch.nn.Module], metadata: dict | None = None) -> None:
    """Write the modules' weights to a safetensors file (atomically)."""
    meta = {"format": RUN_FORMAT, **{k: str(v) for k, v in (metadata or {}).items()}}
    with atomic_path(path) as tmp:
        save_file(module_tensors(modules), str(tmp), metadata=meta)


def _load_into(modules: dict[str, torch.nn.Module], tensors: dict[str, torch.Tensor], origin: str) -> None:
    for name, m in modules.items():
        prefix = name + "."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        # buffers whose shape depends on the data (fit families) are resized to the stored tensor
        for key, value in sd.items():
            owner_name, _, leaf = key.rpartition(".")
            owner = m.get_submodule(owner_name) if owner_name else m
            buf = owner._buffers.get(leaf) if hasattr(owner, "_buffers") else None
            if buf is not None and buf.shape != value.shape:
                owner._buffers[leaf] = torch.empty(value.shape, dtype=buf.dtype, device=buf.device)
        try:
            m.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            msg = " ".join(str(e).split())
            raise ModelError(f"{origin}: weights do not fit module {name!r} of this config ({msg[:300]})") from None
    unknown = sorted({k.split(".", 1)[0] for k in tensors} - set(modules))
    if unknown:
        raise ModelError(f"{origin}: holds weights of module(s) {unknown} that this config does not build ({sorted(modules)})")


def load_modules(path: str | Path, modules: dict[str, torch.nn.Module]) -> dict[str, str]:
    """Load a safetensors file written by :func:`save_modules` into ``modules``; returns its metadata."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise ModelError(f"{path}: not a readable safetensors file ({e})") from None
    _load_into(modules, tensors, str(path))
    return meta


def save_checkpoint(ckpt_dir: str | Path, step: int, modules, ema_modules, state: dict, keep: int = 1) -> None:
    """Write a complete resumable checkpoint of ``step``; ``latest.json`` is replaced last, so a
    crash at any point leaves the previous checkpoint usable. Older checkpoints beyond ``keep``
    are removed."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    stem = f"step-{step:08d}"
    save_modules(d / f"{stem}.safetensors", modules, {"step": step})
    if ema_modules:
        save_modules(d / f"{stem}.ema.safetensors", ema_modules, {"step": step})
    with atomic_path(d / f"{stem}.pt") as tmp:
        torch.save(state, tmp)
    write_json(d / "latest.json", {"step": step, "stem": stem, "ema": bool(ema_modules), "format": RUN_FORMAT})
    stems = sorted({p.name.split(".")[0] for p in d.glob("step-*")})
    for old in stems[:-keep] if keep > 0 else []:
        if old != stem:
            for p in d.glob(f"{old}.*"):
                p.unlink(missing_ok=True)


def load_checkpoint(ckpt_dir: str | Path, modules, ema_modules) -> dict:
    """Load the latest checkpoint into ``modules`` / ``ema_modules``; returns the state dict."""
    d = Path(ckpt_dir)
    latest = d / "latest.json"
    if not latest.is_file():
        raise ModelError(f"{d}: no checkpoint to resume from (latest.json missing)")
    info = read_json(latest)
    stem = info["stem"]
    load_modules(d / f"{stem}.safetensors", modules)
    if ema_modules:
        if not info.get("ema"):
            raise ModelError(f"{d}: checkpoint has no EMA weights but the config asks for EMA")
        load_modules(d / f"{stem}.ema.safetensors", ema_modules)
    try:
        state = torch.load(d / f"{stem}.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"{d / (stem + '.pt')}: cannot load checkpoint state ({' '.join(str(e).split())[:200]})") from None
    if int(state["step"]) != int(info["step"]):
        raise ModelError(f"{d}: latest.json names step {info['step']} but {stem}.pt holds step {state['step']}")
    return state


class CsvLog:
    """Append-only CSV with a header; grows its columns when new keys appear; can be cut back to
    a step on resume."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fields: list[str] = []
        if self.path.is_file():
            with self.path.open(newline="") as f:
                self.fields = next(csv.reader(f), [])

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.fields, restval="", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        with atomic_path(self.path) as tmp:
            tmp.write_text(buf.getvalue())

    def append(self, row: dict) -> None:
        new = [k for k in row if k not in self.fields]
        if new or not self.path.is_file():
            old = self.rows()
            self.fields = self.fields + new
            self._rewrite(old + [row])
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, restval="", extrasaction="ignore").writerow(row)

    def truncate(self, step: int) -> None:
        """Drop rows with ``step`` > ``step`` (resume continues from there)."""
        if self.path.is_file():
            self._rewrite([r for r in self.rows() if int(float(r.get("step") or 0)) <= step])


