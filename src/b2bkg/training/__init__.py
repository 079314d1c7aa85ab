"""Shared training core: one trainer for every model family.

- :mod:`.registry`: :class:`Family` (what a model contributes), :class:`TrainConfig`, ``@register``.
- :mod:`.trainer`: :func:`train` / :class:`Trainer` (optimizer loop, LR schedule, EMA, DDP, logs,
  validation with best checkpoint, resumable checkpoints).
- :mod:`.data`: :class:`ArrayBatches` (resumable, DDP-sharded batches).
- :mod:`.sampling`: per-event random draws for samplers (:func:`event_normal`).
- :mod:`.checkpoint`: run-folder files (safetensors, YAML/JSON, atomic writes).
- :mod:`.distributed`: torchrun / DDP helpers.
- :mod:`.toy`: the ``toy-gan`` reference family.

Generation from a run folder is :func:`b2bkg.generate.generate`.
"""

from .data import ArrayBatches, Batches
from .ema import Ema
from .registry import Family, TrainConfig, get_family, known_families, register
from .sampling import event_normal, event_uniform
from .trainer import Trainer, TrainState, resolve_config, train

__all__ = [
    "Family", "TrainConfig", "register", "get_family", "known_families", "Trainer", "TrainState", "train",
    "resolve_config", "ArrayBatches", "Batches", "Ema", "event_normal", "event_uniform",
]
