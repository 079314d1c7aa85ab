"""Evaluation entry point shared by the CLI and notebooks: dispatch on the files' schema."""

from __future__ import annotations

import json
from pathlib import Path

from b2bkg.core.errors import ConfigError, SchemaError
from b2bkg.io import open_file
from b2bkg.io.atomic import write_text_atomic


def _meta(path) -> dict:
    with open_file(path) as f:
        return dict(f.meta)


def _load(path, group, max_events):
    with open_file(path) as f:
        if group not in f.groups:
            raise SchemaError(str(path), group, f"file has no {group} group (has: {', '.join(f.groups)})")
        stop = f.n_events if max_events is None else min(f.n_events, max_events)
        return f.read(group, 0, stop)


def evaluate_files(truth, generated, out, *, truth2=None, seed: int = 0, max_events: int | None = None,
                   train=None) -> dict:
    """Evaluate ``generated`` against ``truth`` (and the floor from ``truth2``), writing ``out/``.

    ``train`` (PXD only): the model's training file, for the mode-collapse / memorization check.
    ``out/provenance.json`` records each input's ``simulator_hash``; ``metrics["warnings"]`` says
    when truth, floor and training files come from different simulator versions.

    The pillar is chosen from the truth file's groups: ``pxd`` -> :func:`b2bkg.pxd.evaluate.evaluate_pxd`,
    ``ecl`` -> :func:`b2bkg.ecl.evaluate.evaluate_ecl`.
    """
    with open_file(truth) as f:
        groups = f.groups
    if "pxd" in groups:
        from b2bkg.pxd.evaluate import evaluate_pxd as fn

        group = "pxd"
    elif "ecl" in groups:
        from b2bkg.ecl.evaluate import evaluate_ecl as fn

        group = "ecl"
    else:
        raise SchemaError(str(truth), None, f"nothing to evaluate: groups {groups} (need pxd or ecl)")
    t = _load(truth, group, max_events)
    g = _load(generated, group, max_events)
    t2 = _load(truth2, group, max_events) if truth2 else None
    Path(out).mkdir(parents=True, exist_ok=True)
    kw = {}
    if train is not None:
        if group != "pxd":
            raise ConfigError(f"--train {train}: the mode-collapse check is defined for PXD samples only")
        kw["train"] = _load(train, group, max_events)
    if group == "ecl":
        # the ECL models generate the non-selected (noise) waveforms; the energetic ones a hybrid
        # keeps from data are left out of the truth side of every comparison
        from b2bkg.ecl.select import select_waveforms

        kw["mask"] = select_waveforms(t.waveforms)
    metrics = fn(t, g, out, truth2=t2, seed=seed, **kw)
    # truth, floor and training samples should come from one simulator version
    from b2bkg.core.provenance import physics_mismatch

    sources = {"truth": truth, "truth2": truth2, "train": train}
    metas = {label: _meta(p) for label, p in sources.items() if p is not None}
    metrics["simulator_hash"] = {label: m.get("simulator_hash") for label, m in metas.items()}
    mismatch = physics_mismatch(metas)
    metrics["warnings"] = [mismatch] if mismatch else []
    write_text_atomic(Path(out) / "provenance.json", json.dumps(
        {"simulator_hash": metrics["simulator_hash"], "git": {k: m.get("git") for k, m in metas.items()},
         "warnings": metrics["warnings"]}, indent=1) + "\n")
    if group == "pxd":
        from b2bkg.pxd.evaluate import format_metrics

        metrics["summary_text"] = format_metrics(metrics)
    return metrics
