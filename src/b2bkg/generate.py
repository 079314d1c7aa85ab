"""Generate events from a trained run folder (``b2bkg generate``).

:func:`load_run` reads a run folder without executing code (``config.yaml`` -> the family's frozen
config, weights from safetensors) and builds the family's modules; :func:`generate` samples
``n_events`` in batches with the family's sampler and writes them with the family's writer (the
contract-schema :class:`b2bkg.io.FileWriter` for detector models), with a progress bar.

Event ``i`` draws its randomness only from streams derived from ``(seed, i)`` (see
:mod:`b2bkg.training.sampling`), and the network always processes the aligned block of events
``k*B .. (k+1)*B-1`` (``B`` = batch size; events outside ``start .. start+n_events-1`` are
computed and dropped), so the same seed gives bitwise the same events whatever ``n_events`` or
sharding (``start``), on the same device, thread count and batch size. A different batch size
draws the same random numbers but may change network outputs by float rounding (a matrix product
of M rows is not bitwise independent of M on CPU/GPU); ``generate_batch_size`` is recorded in the
output file.

Example:
    >>> from b2bkg.generate import generate                                   # doctest: +SKIP
    >>> generate("runs/pxd", 1000, seed=3, out="bkg.h5", device="cuda")       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import b2bkg
from b2bkg.core.config import from_dict, load_yaml
from b2bkg.core.errors import ConfigError, ModelError
from b2bkg.core.progress import progress

__all__ = ["LoadedRun", "load_run", "generate"]


@dataclass
class LoadedRun:
    """A run folder in memory: family, its config, modules (eval mode, on ``device``), the run's
    ``config.yaml`` as a dict and the weights file used."""

    family: Any
    cfg: Any
    modules: dict[str, torch.nn.Module]
    run_config: dict
    weights_file: Path
    weights_meta: dict


def load_run(run_dir, device="cpu", weights: str = "auto") -> LoadedRun:
    """Load a run folder. ``weights``: ``auto`` (``best.safetensors`` if the run selected one by
    its validation metric, else ``weights.safetensors``), ``best``, ``final``, or a file path."""
    from b2bkg.training.checkpoint import load_modules
    from b2bkg.training.registry import get_family

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise ModelError(f"--model {run}: not a run folder (config.yaml missing)")
    rc = load_yaml(run / "config.yaml")
    if "model" not in rc or "config" not in rc:
        raise ModelError(f"{run / 'config.yaml'}: not a run config (needs 'model' and 'config')")
    family = get_family(rc["model"])
    cfg = from_dict(family.config_cls, rc["config"])
    choices = {"best": run / "best.safetensors", "final": run / "weights.safetensors"}
    if weights == "auto":
        wfile = choices["best"] if choices["best"].is_file() else choices["final"]
    elif weights in choices:
        wfile = choices[weights]
    else:
        wfile = Path(weights)
    if not wfile.is_file():
        raise ModelError(f"--model {run}: {wfile.name} not found (training not finished?)")
    modules = family.build(cfg)
    meta = load_modules(wfile, modules)
    dev = torch.device(device)
    modules = {k: m.to(dev).eval() for k, m in modules.items()}
    return LoadedRun(family, cfg, modules, rc, wfile, meta)


def generate(run_dir, n_events: int, seed: int, out, conditions=None, device="cpu", batch_size: int | None = None,
             keep_from=None, command: str = "", weights: str = "auto", start: int = 0) -> Path:
    """Sample events ``start .. start+n_events-1`` from the run folder ``run_dir`` into ``out``.

    Args:
        run_dir: run folder written by ``b2bkg train``.
        n_events: number of events (>= 1).
        seed: master seed; event ``i`` uses streams of ``(seed, i)`` only.
        out: output file (suffix picks the format, e.g. ``.h5``/``.root``).
        conditions: conditioned models only: a data file whose ``conditions`` group is reused event
            by event, a YAML ``ConditionsConfig``, or None (nominal conditions, sampled per event).
        device: torch device of the sampler.
        batch_size: events per sampler call (default: the family's ``generate_batch_size``).
        keep_from: models that keep part of real events (``supports_keep``): the file to keep from.
        command: command line recorded in the output file.
        weights: see :func:`load_run`.
        start: global index of the first event (campaign shards).

    Returns:
        the output path.
    """
    from b2bkg.training.trainer import derived_seed

    if isinstance(n_events, bool) or not isinstance(n_events, (int, np.integer)) or n_events < 1:
        raise ConfigError(f"--events: {n_events!r} must be a positive integer")
    run = load_run(run_dir, device, weights)
    fam, cfg = run.family, run.cfg
    if fam.cannot_generate:
        raise ModelError(f"model {fam.name} ({run_dir}) cannot generate events: {fam.cannot_generate}")
    bs = int(batch_size or fam.generate_batch_size)
    if bs < 1:
        raise ConfigError(f"--batch-size: {batch_size} must be >= 1")
    cond_src = None
    if fam.conditioned and (conditions is not None or not fam.learned_conditions):
        from b2bkg.core.conditions import resolve_conditions

        cond_src = resolve_conditions(conditions)
    elif conditions is not None:
        raise ModelError(f"--conditions {conditions}: model {fam.name} is not conditioned on beam conditions")
    if keep_from is not None and not fam.supports_keep:
        raise ModelError(f"--keep-from {keep_from}: model {fam.name} does not keep events from a file")
    attrs = {"model": fam.name, "run_dir": str(Path(run_dir).resolve()), "weights": run.weights_file.name,
             "model_step": run.weights_meta.get("step", ""), "model_seed": run.run_config.get("seed", ""),
             "generate_start": int(start), "generate_batch_size": bs, "version": b2bkg.__version__}
    torch.manual_seed(derived_seed(seed, "generate.global"))  # guards samplers that touch the global RNG
    with contextlib.ExitStack() as stack:
        keep_reader = None
        if keep_from is not None:
            from b2bkg.io import open_file

            keep_reader = stack.enter_context(open_file(keep_from))
            if keep_reader.n_events < start + n_events:
                raise ConfigError(f"--keep-from {keep_from}: holds {keep_reader.n_events} events, need {start + n_events}")
        with fam.open_writer(out, seed=seed, command=command, attrs=attrs) as writer, torch.inference_mode():
            bar = progress(total=n_events, desc=f"generate {fam.name}", unit="evt")
            stop = start + n_events
            for k in range(start // bs, (stop - 1) // bs + 1):
                # the network always sees the aligned block k*bs .. (k+1)*bs-1, whatever start/n_events
                b0, b1 = k * bs, (k + 1) * bs
                if keep_reader is not None:
                    b1 = min(b1, keep_reader.n_events)
                events = np.arange(b0, b1, dtype=np.int64)
                lo, hi = max(start, b0) - b0, min(stop, b1) - b0
                cond = None
                if cond_src is not None:
                    from b2bkg.core.conditions import CONDITION_NAMES
                    from b2bkg.core.seeding import event_rng
                    from b2bkg.io import Conditions

                    vals = np.stack([cond_src.get(int(e), event_rng(seed, "generate.conditions", int(e))) for e in events])
                    cond = Conditions(vals.astype(np.float32), CONDITION_NAMES)
                keep = None
                if keep_reader is not None:
                    keep = {g: getattr(keep_reader, f"read_{g}")(b0, b1) for g in fam.outputs}
                groups = fam.sample(run.modules, cfg, events, seed, torch.device(device), conditions=cond, keep=keep)
                if cond is not None and "conditions" not in groups:
                    groups = {**groups, "conditions": cond}
                writer.append(**{g: _take(c, lo, hi) for g, c in groups.items()})
                bar.update(hi - lo)
            bar.close()
    return Path(out)


def _take(container, lo: int, hi: int):
    """Events ``lo:hi`` of a container (``.slice``) or an array."""
    n = container.n_events if hasattr(container, "n_events") else len(container)
    if lo == 0 and hi == n:
        return container
    return container.slice(lo, hi) if hasattr(container, "slice") else container[lo:hi]
