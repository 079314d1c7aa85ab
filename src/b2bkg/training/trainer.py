"""The one trainer every model family uses.

:func:`train` resolves the config of a family (preset / YAML / ``--set``), prepares the run folder
and runs :class:`Trainer`. The trainer owns: optimizers (built by the family), the LR schedule of
:class:`~b2bkg.training.registry.TrainConfig`, gradient averaging over DDP ranks, gradient
clipping, EMA, the progress bar, ``log.csv`` / ``val.csv``, validation every ``val_every`` steps
with best-checkpoint selection, resumable checkpoints and the final weights. A family contributes
only its loss step (see :mod:`b2bkg.training.registry`).

Resume: a checkpoint holds the raw and EMA weights, every optimizer's state, the step, the data
stream position, the torch/numpy RNG states of every rank and the best metric so far, so a run
killed at any point (even SIGKILL) and resumed with ``resume=True`` ends with bitwise the same
weights as an uninterrupted run of the same seed (same device and thread count).

Example:
    >>> from b2bkg.training import train                                      # doctest: +SKIP
    >>> run = train("toy-gan", "toy.npy", "runs/toy", overrides=["max_steps=200"], seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

import b2bkg
from b2bkg.core.config import from_dict, load_config, load_yaml, to_dict
from b2bkg.core.errors import ConfigError, ModelError
from b2bkg.core.progress import progress
from b2bkg.core.seeding import event_seed_sequence

from . import checkpoint as ck
from .distributed import DistInfo, all_mean, average_gradients, barrier, broadcast_modules, gather_objects, init_distributed
from .ema import Ema
from .registry import Family, get_family

__all__ = ["train", "resolve_config", "Trainer", "TrainState", "lr_factor", "derived_seed"]


def derived_seed(seed: int, domain: str, index: int = 0) -> int:
    """A 63-bit integer seed for ``torch.manual_seed`` from (seed, domain, index)."""
    return int(event_seed_sequence(seed, domain, index).generate_state(1, dtype=np.uint64)[0] & 0x7FFF_FFFF_FFFF_FFFF)


def lr_factor(cfg, step: int) -> float:
    """Multiplier of the initial learning rate at 0-based ``step`` (see ``TrainConfig``)."""
    f = 1.0
    if cfg.lr_warmup_steps and step < cfg.lr_warmup_steps:
        f *= (step + 1) / cfg.lr_warmup_steps
    if cfg.lr_schedule == "linear" and cfg.max_steps > 0:
        start = cfg.lr_decay_start * cfg.max_steps
        if step >= start:
            span = max(cfg.max_steps - start, 1.0)
            f *= 1.0 - (1.0 - cfg.lr_final_factor) * min((step - start) / span, 1.0)
    return f


def resolve_config(family: Family, config=None, overrides=()):
    """Family config from a preset name (default ``small`` when the family ships one), a YAML
    file (a family config, or a run folder's ``config.yaml``), a dict or a config instance, then
    ``--set`` overrides."""
    if isinstance(config, family.config_cls):
        from b2bkg.core.config import apply_overrides

        return apply_overrides(config, overrides) if overrides else config
    if config is None and (family.presets_dir / "small.yaml").is_file():
        config = "small"
    if isinstance(config, (str, Path)) and Path(config).suffix in (".yaml", ".yml"):
        data = load_yaml(config)
        if "config" in data and "model" in data:  # a run folder's config.yaml
            if data["model"] != family.name:
                raise ConfigError(f"--config {config}: written for model {data['model']!r}, not {family.name!r}")
            data = data["config"]
        config = data
    return load_config(family.config_cls, config, overrides, presets_dir=family.presets_dir)


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _rng_state(device: torch.device) -> dict:
    """This process's torch (CPU + CUDA) and numpy global RNG state, as tensors and ints."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss), "numpy_gauss": float(gauss),
    }
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict, device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(("MT19937", st["numpy_keys"].numpy().astype(np.uint32), st["numpy_pos"], st["numpy_has_gauss"], st["numpy_gauss"]))
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


class TrainState:
    """What ``Family.step`` sees: ``cfg``, ``modules``, ``optimizers``, ``device``, ``rank``,
    ``world_size``; :meth:`update` performs one optimizer step, :meth:`next_batch` draws a batch."""

    def __init__(self, cfg, modules, optimizers, device, dist_info: DistInfo, data):
        self.cfg, self.modules, self.optimizers, self.device = cfg, modules, optimizers, device
        self.rank, self.world_size = dist_info.rank, dist_info.world_size
        self._data = data
        self._params = {k: [p for g in o.param_groups for p in g["params"]] for k, o in optimizers.items()}

    def next_batch(self):
        """Next training batch of this rank, on the device."""
        return _to_device(self._data.next(), self.device)

    def update(self, name: str, loss: torch.Tensor, retain_graph: bool = False) -> float:
        """zero_grad, ``loss.backward()``, average gradients over ranks, clip (``cfg.grad_clip``),
        ``optimizers[name].step()``. Returns the gradient norm before clipping (0 if not clipped)."""
        if name not in self.optimizers:
            raise KeyError(f"update({name!r}): no such optimizer (have {sorted(self.optimizers)})")
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward(retain_graph=retain_graph)
        params = self._params[name]
        average_gradients(params)
        norm = 0.0
        if self.cfg.grad_clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        opt.step()
        return norm


class Trainer:
    """Trains ``family`` with config ``cfg`` into the run folder ``out``.

    Args:
        family: a registered :class:`~b2bkg.training.registry.Family`.
        cfg: its resolved config (a ``family.config_cls`` instance).
        out: run folder (created; must not hold a run unless ``resume``).
        data: training data file (passed to ``family.make_data``).
        val: held-out data file for ``family.validate`` (None: no validation).
        seed: master seed (weights init, data order, training noise).
        device: ``cpu``, ``cuda``... (under torchrun, ``cuda`` means ``cuda:LOCAL_RANK``).
        resume: continue from ``out/checkpoint`` (config from ``out/config.yaml``).
        command: command line recorded in ``config.yaml``.
    """

    def __init__(self, family: Family, cfg, out, *, data, val=None, seed: int = 0, device: str = "cpu",
                 resume: bool = False, command: str = ""):
        self.family, self.cfg, self.out = family, cfg, Path(out)
        self.data_path, self.val_path, self.seed, self.resume, self.command = data, val, int(seed), resume, command
        self.dist, self.device = init_distributed(device)
        self.main = self.dist.is_main

        # identical initial weights on every rank
        torch.manual_seed(derived_seed(self.seed, "train.init"))
        self.modules: dict[str, torch.nn.Module] = {k: m.to(self.device) for k, m in family.build(cfg).items()}
        broadcast_modules(self.modules.values())
        unknown = [k for k in cfg.ema_modules if k not in self.modules]
        if unknown:
            raise ConfigError(f"ema_modules: {unknown} not among the modules {sorted(self.modules)}")
        use_ema = cfg.ema_decay > 0 and cfg.ema_modules
        self.emas = {k: Ema(self.modules[k], cfg.ema_decay) for k in cfg.ema_modules} if use_ema else {}
        self.optimizers = family.optimizers(cfg, self.modules) or {}
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                g.setdefault("initial_lr", g["lr"])
        self.step = 0
        self.best: dict | None = None
        self.log = ck.CsvLog(self.out / "log.csv")
        self.val_log = ck.CsvLog(self.out / "val.csv")
        self._t0 = time.time()

    # -- helpers ---------------------------------------------------------------------------------
    def _ema_shadows(self) -> dict[str, torch.nn.Module]:
        return {k: e.module for k, e in self.emas.items()}

    def eval_modules(self) -> dict[str, torch.nn.Module]:
        """Modules as used for validation and the final weights: EMA shadows where configured."""
        return {k: self.emas[k].module if k in self.emas else m for k, m in self.modules.items()}

    def _run_config(self) -> dict:
        return {
            "model": self.family.name, "seed": self.seed, "version": b2bkg.__version__, "git": ck.git_hash(),
            "data": str(self.data_path), "val": None if self.val_path is None else str(self.val_path),
            "world_size": self.dist.world_size, "device": self.device.type, "command": self.command,
            "format": ck.RUN_FORMAT, "config": to_dict(self.cfg),
        }

    def _meta(self, status: str, extra: dict | None = None) -> dict:
        return {
            "model": self.family.name, "status": status, "step": self.step, "max_steps": self.cfg.max_steps,
            "seed": self.seed, "world_size": self.dist.world_size, "device": str(self.device),
            "wall_s": round(time.time() - self._t0, 3), "torch_threads": torch.get_num_threads(),
            "parameters": {k: sum(p.numel() for p in m.parameters()) for k, m in self.modules.items()},
            "ema_modules": sorted(self.emas), "best": self.best, **(extra or {}),
        }

    def _prepare_folder(self) -> None:
        cfg_file = self.out / "config.yaml"
        if self.resume:
            if not (self.out / "checkpoint" / "latest.json").is_file():
                raise ModelError(f"--resume: {self.out} has no checkpoint to resume from")
            return
        if cfg_file.exists():
            raise ConfigError(f"--out {self.out}: already holds a run (config.yaml); use --resume or a new folder")
        barrier()  # every rank has checked before rank 0 writes
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            ck.write_yaml(cfg_file, self._run_config())
            ck.write_json(self.out / "meta.json", self._meta("running"))

    def _save_checkpoint(self, data) -> None:
        rng = gather_objects(_rng_state(self.device))
        if not self.main:
            return
        state = {
            "step": self.step,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "data": data.state_dict(),
            "rng": rng,
            "world_size": self.dist.world_size,
            "best_value": float("nan") if self.best is None else float(self.best["value"]),
            "best_step": -1 if self.best is None else int(self.best["step"]),
        }
        ck.save_checkpoint(self.out / "checkpoint", self.step, self.modules, self._ema_shadows(), state)
        ck.write_json(self.out / "meta.json", self._meta("running"))

    def _load_checkpoint(self, data) -> None:
        state = ck.load_checkpoint(self.out / "checkpoint", self.modules, self._ema_shadows())
        if int(state["world_size"]) != self.dist.world_size:
            raise ModelError(f"--resume {self.out}: checkpoint written by {state['world_size']} rank(s), "
                             f"resumed with {self.dist.world_size}; use the same number of processes")
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        data.load_state_dict(state["data"])
        _set_rng_state(state["rng"][self.dist.rank], self.device)
        self.step = int(state["step"])
        if state["best_step"] >= 0:
            bj = self.out / "best.json"
            self.best = ck.read_json(bj) if bj.is_file() else {"step": state["best_step"], "value": state["best_value"]}
            self.best["value"], self.best["step"] = float(state["best_value"]), int(state["best_step"])
        if self.main:
            self.log.truncate(self.step)
            self.val_log.truncate(self.step)

    def _set_lr(self, step: int) -> float:
        f = lr_factor(self.cfg, step)
        for o in self.optimizers.values():
            for g in o.param_groups:
                g["lr"] = g["initial_lr"] * f
        return f

    def _validate(self, val_data) -> dict | None:
        """Validation on rank 0 with its own RNG (the training RNG stream is untouched)."""
        if val_data is None or not self.main:
            return None
        mods = self.eval_modules()
        was_training = {k: m.training for k, m in mods.items()}
        for m in mods.values():
            m.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(derived_seed(self.seed, "train.validate", self.step))
            metrics = self.family.validate(mods, self.cfg, val_data, derived_seed(self.seed, "train.validate", self.step))
        for k, m in mods.items():
            m.train(was_training[k])
        if not metrics:
            return None
        metrics = {k: float(v) for k, v in metrics.items()}
        name = self.cfg.val_metric or next(iter(metrics))
        if name not in metrics:
            raise ConfigError(f"val_metric: {name!r} is not a metric of {self.family.name} (have {sorted(metrics)})")
        self.val_log.append({"step": self.step, **metrics})
        value = metrics[name]
        better = self.best is None or (value < self.best["value"] if self.cfg.val_mode == "min" else value > self.best["value"])
        if better and math.isfinite(value):
            self.best = {"step": self.step, "metric": name, "value": value, "mode": self.cfg.val_mode, "metrics": metrics}
            ck.save_modules(self.out / "best.safetensors", mods, {"model": self.family.name, "step": self.step, "metric": name, "value": value})
            ck.write_json(self.out / "best.json", self.best)
        return metrics

    def _finish(self, extra: dict | None = None) -> None:
        if self.main:
            ck.save_modules(self.out / "weights.safetensors", self.eval_modules(),
                            {"model": self.family.name, "step": self.step, "ema": ",".join(sorted(self.emas))})
            ck.write_json(self.out / "meta.json", self._meta("complete", extra))
        barrier()

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train to ``cfg.max_steps`` (or fit once); returns the run folder."""
        self._prepare_folder()
        barrier()
        data = self.family.make_data(self.cfg, self.data_path, self.seed, rank=self.dist.rank, world_size=self.dist.world_size)
        val_data = self.family.load_val(self.cfg, self.val_path) if (self.val_path is not None and self.main) else None
        if self.family.is_fit:
            return self._run_fit(data, val_data)
        self.family.prepare(self.cfg, self.modules, data)
        for k, e in self.emas.items():  # the shadows start from the prepared weights (a resume overrides them)
            e.reset(self.modules[k])
        if not self.optimizers:
            raise ModelError(f"model {self.family.name}: optimizers() returned none and the family has no fit()")
        # per-rank training noise (latents, dropout)
        torch.manual_seed(derived_seed(self.seed, "train.rng", self.dist.rank))
        np.random.seed(derived_seed(self.seed, "train.numpy", self.dist.rank) % 2**32)
        if self.resume:
            self._load_checkpoint(data)
        state = TrainState(self.cfg, self.modules, self.optimizers, self.device, self.dist, data)
        for m in self.modules.values():
            m.train()
        bar = progress(total=self.cfg.max_steps, initial=self.step, desc=f"train {self.family.name}", unit="step") if self.main else None
        cfg = self.cfg
        try:
            while self.step < cfg.max_steps:
                lr = self._set_lr(self.step)
                batch = _to_device(data.next(), self.device)
                losses = self.family.step(state, batch, self.step)
                for k, e in self.emas.items():
                    e.update(self.modules[k])
                self.step += 1
                last = self.step == cfg.max_steps
                if self.step % cfg.log_every == 0 or last:
                    avg = all_mean({k: float(v) for k, v in (losses or {}).items()}, self.device)
                    if self.main:
                        self.log.append({"step": self.step, "time_s": round(time.time() - self._t0, 3), "lr_factor": lr, **avg})
                        bar.set_postfix({k: f"{v:.4g}" for k, v in avg.items()}, refresh=False)
                if (cfg.val_every and self.step % cfg.val_every == 0) or last:
                    self._validate(val_data)
                if self.step % cfg.checkpoint_every == 0 or last:
                    self._save_checkpoint(data)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        self._check_in_sync()
        self._finish()
        return self.out

    def _check_in_sync(self) -> None:
        """DDP guard: every rank must end with rank 0's weights."""
        if not self.dist.enabled:
            return
        sums = [float(sum(p.detach().double().sum() for p in m.parameters())) for m in self.modules.values()]
        all_sums = gather_objects(sums)
        if any(s != all_sums[0] for s in all_sums):
            raise ModelError(f"DDP ranks diverged: parameter sums per rank {all_sums}")

    def _run_fit(self, data, val_data) -> Path:
        if self.dist.enabled:
            raise ConfigError(f"model {self.family.name} is fitted in one pass; run it as a single process, not under torchrun")
        torch.manual_seed(derived_seed(self.seed, "train.rng", 0))
        summary = self.family.fit(self.cfg, self.modules, data, self.seed) or {}
        self.step = 1
        self.log.append({"step": 1, "time_s": round(time.time() - self._t0, 3), **{k: float(v) for k, v in summary.items()}})
        self._validate(val_data)
        self._finish({"fit": {k: float(v) for k, v in summary.items()}})
        return self.out


def train(model: str, data, out, *, config=None, overrides=(), val=None, resume: bool = False, seed: int | None = None,
          device: str = "cpu", command: str = "") -> Path:
    """Train MODEL on the data file ``data`` into the run folder ``out``; returns ``out``.

    ``config``: preset name (``small``/``paper``), YAML file, dict or config instance (default:
    the ``small`` preset). ``overrides``: ``["key=value", ...]``. On ``resume`` the config and
    seed come from ``out/config.yaml`` (``overrides`` still apply, e.g. a larger ``max_steps``).
    """
    family = get_family(model)
    if not Path(data).exists():
        raise ConfigError(f"--data {data}: file not found")
    if val is not None and not Path(val).exists():
        raise ConfigError(f"--val {val}: file not found")
    if resume:
        run_cfg_file = Path(out) / "config.yaml"
        if not run_cfg_file.is_file():
            raise ModelError(f"--resume: {out} holds no run (config.yaml missing)")
        run_cfg = load_yaml(run_cfg_file)
        if run_cfg.get("model") != model:
            raise ConfigError(f"--resume {out}: the run is of model {run_cfg.get('model')!r}, not {model!r}")
        if seed is not None and int(seed) != int(run_cfg["seed"]):
            raise ConfigError(f"--seed {seed}: the run was started with seed {run_cfg['seed']}")
        if config is not None:
            raise ConfigError("--config cannot be combined with --resume (the run's config.yaml is used; --set still applies)")
        cfg = resolve_config(family, from_dict(family.config_cls, run_cfg["config"]), overrides)
        seed = int(run_cfg["seed"])
    else:
        cfg = resolve_config(family, config, overrides)
        seed = 0 if seed is None else int(seed)
    trainer = Trainer(family, cfg, out, data=data, val=val, seed=seed, device=device, resume=resume, command=command)
    if resume and trainer.main:
        # record overrides applied at resume time (e.g. a longer max_steps)
        rc = load_yaml(Path(out) / "config.yaml")
        if rc.get("config") != to_dict(cfg):
            rc["config"] = to_dict(cfg)
            ck.write_yaml(Path(out) / "config.yaml", rc)
    return trainer.run()
