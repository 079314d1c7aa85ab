"""Selective-MC filtering: keep generator-level events by the network's score, weight them.

Two modes (seed 003; REFERENCE.md "production practice"):

* ``sample`` (importance sampling, current basf2 practice): keep event i for skim s with
  probability ``p_is = clip(f(score_is), p_min, 1)`` and give it the weight ``1/p_is``; with
  ``f(s) = min(1, scale * s**power)``. Default ``f(s) = 1.5 sqrt(s)``: for a calibrated score q
  (the network is trained with binary cross-entropy, a proper scoring rule) the cost per
  effective passing event ``(N c_gen + c_sim sum p) sum_pass(1/p) / N_pass^2`` is minimised by
  ``p proportional to sqrt(q)`` (Lagrange condition ``q_i / p_i^2 = const``); the factor 1.5 was
  scanned on held-out events (see :func:`b2bkg.selmc.speedup.scan_scale`). The identity
  (``scale=1, power=1``, the seed's choice) wastes effective events on passing events with small
  scores. The oracle of :mod:`b2bkg.selmc.speedup` uses the same map. Every event keeps a chance
  >= ``p_min``, so weighted distributions are unbiased and weights are <= ``1/p_min``.
  All skims of one event share the event's uniform number u: the event is kept for skim s when
  ``u < p_is`` (each skim's marginal is exactly importance sampling; events kept for one skim are
  mostly the ones kept for another, so fewer events go to simulation).
* ``threshold`` (the seed's first version): keep when ``score >= threshold``, weight 1. Biased:
  events the network dislikes are lost for good; kept to show that bias.

The score comes only from the trained network applied to the generator-level particles and the
decay string: the skim emulator is never called and ``passed_*`` / ``pass_prob_*`` are never
read (they are copied to the output unchanged when present, for evaluation). The uniform of the
event with id ``e`` is drawn from ``event_rng(seed, "smc.filter", e)``, so the kept set does not
depend on chunking, file order or sharding.

Output: the kept events (event order preserved) with every per-event dataset of the input,
``event_id``, and ``weight_<skim>`` per skim (0 where not kept for that skim); root attributes
``n_input_events``, ``filter_mode``, ``p_min``, ``threshold``, ``skims``, ``model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError
from b2bkg.core.seeding import event_rng
from b2bkg.io.events import SmcEvents

__all__ = ["FilterConfig", "keep_probability", "event_uniforms", "filter_weights", "filter_file", "select_events"]

MODES = ("sample", "threshold")


@dataclass(frozen=True)
class FilterConfig:
    """How scores become keep decisions (see the module docstring).

    Attributes:
        mode: ``sample`` (importance sampling) or ``threshold``.
        p_min: smallest keep probability in ``sample`` mode (weights <= 1/p_min).
        threshold: score cut in ``threshold`` mode.
        scale, power: ``f(s) = min(1, scale * s**power)`` in ``sample`` mode.
    """

    mode: str = "sample"
    p_min: float = 0.01
    threshold: float = 0.5
    scale: float = 1.5
    power: float = 0.5

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"--mode: {self.mode!r} is not one of {', '.join(MODES)}")
        check_range("p_min", self.p_min, 1e-6, 1.0)
        check_range("threshold", self.threshold, 0.0, 1.0)
        check_range("scale", self.scale, 1e-9, None)
        check_range("power", self.power, 1e-3, 10.0)


def keep_probability(score: np.ndarray, cfg: FilterConfig) -> np.ndarray:
    """Keep probability p (same shape as ``score``, float64): ``clip(f(score), p_min, 1)`` or a 0/1 cut."""
    s = np.clip(np.asarray(score, np.float64), 0.0, 1.0)
    if cfg.mode == "threshold":
        return (s >= cfg.threshold).astype(np.float64)
    return np.clip(cfg.scale * s**cfg.power, cfg.p_min, 1.0)


def event_uniforms(event_ids: np.ndarray, seed: int) -> np.ndarray:
    """One uniform in [0, 1) per event from ``event_rng(seed, "smc.filter", event_id)``, shape (n,)."""
    ids = np.asarray(event_ids, np.int64)
    return np.fromiter((event_rng(seed, "smc.filter", int(e)).random() for e in ids), np.float64, len(ids))


def filter_weights(score: np.ndarray, event_ids: np.ndarray, cfg: FilterConfig, seed: int) -> np.ndarray:
    """Weight of every event and skim: 1/p if kept for the skim, else 0.

    Args:
        score: predicted pass probabilities (n, S).
        event_ids: (n,) ids seeding each event's uniform.
    Returns:
        (n, S) float32 weights; an event is written when any of its weights is > 0.
    """
    p = keep_probability(score, cfg)
    if cfg.mode == "threshold":
        return p.astype(np.float32)
    u = event_uniforms(event_ids, seed)[:, None]
    return np.where(u < p, 1.0 / p, 0.0).astype(np.float32)


def select_events(events: SmcEvents, weights: np.ndarray, skims) -> SmcEvents:
    """The events with any weight > 0, with ``weight_<skim>`` added (vectorized gather)."""
    keep = np.nonzero((weights > 0).any(1))[0]
    counts = np.diff(events.offsets)[keep]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    starts = events.offsets[keep]
    part = np.repeat(starts - offsets[:-1], counts) + np.arange(int(offsets[-1]))
    pe = {k: v[keep] for k, v in events.per_event.items() if not k.startswith("weight_")}
    for j, s in enumerate(skims):
        pe[f"weight_{s}"] = weights[keep, j]
    return SmcEvents(offsets, {k: v[part] for k, v in events.particles.items()}, pe)


def filter_file(model, inp, out, *, cfg: FilterConfig | None = None, skims=None, seed: int = 1, chunk: int = 10000,
                command: str = "", device: str = "cpu") -> dict:
    """Filter the smc events of ``inp`` into ``out`` with the network of run folder ``model``.

    Args:
        model: ``smc-nn`` run folder (or a ``(net, cfg)`` pair from :func:`~b2bkg.selmc.models.family.load_run`).
        inp, out: input and output files (.h5 / .root).
        cfg: :class:`FilterConfig` (default: importance sampling with p_min = 0.01).
        skims: skims to write weights for (default: every skim the network predicts).
        seed: master seed of the keep decisions.
        chunk: events read and scored at once.
    Returns:
        summary dict: n_input_events, n_kept, and per skim the kept count, sum of weights,
        max weight and N_eff = (sum w)^2 / sum w^2 over the kept events.
    """
    from b2bkg.core.progress import progress
    from b2bkg.io import FileWriter, open_file
    from b2bkg.selmc.models.family import load_run, predict

    cfg = cfg or FilterConfig()
    net, ncfg = load_run(model, device) if isinstance(model, (str, Path)) else model
    all_skims = tuple(ncfg.skims)
    skims = all_skims if not skims else tuple(skims)
    unknown = [s for s in skims if s not in all_skims]
    if unknown:
        raise ConfigError(f"--skim: {unknown[0]!r} is not predicted by the model (has: {', '.join(all_skims)})")
    cols = [all_skims.index(s) for s in skims]
    stats = {s: {"n_kept": 0, "sum_w": 0.0, "sum_w2": 0.0, "max_w": 0.0} for s in skims}
    n_in = n_kept = 0
    with open_file(inp) as f:
        if "smc" not in f.groups:
            raise ConfigError(f"--in {inp}: no smc group (has: {', '.join(f.groups) or 'none'})")
        attrs = {"filter_mode": cfg.mode, "p_min": cfg.p_min, "threshold": cfg.threshold, "scale": cfg.scale,
                 "power": cfg.power, "skims": ",".join(skims), "model": str(model) if isinstance(model, (str, Path)) else "",
                 "input": str(inp), "sample": f.meta.get("sample", "")}
        with FileWriter(out, seed=seed, command=command, attrs=attrs) as w:
            bar = progress(total=f.n_events, desc="filter", unit="ev")
            try:
                for start in range(0, f.n_events, chunk):
                    ev = f.read_smc(start, min(start + chunk, f.n_events))
                    ids = ev.per_event.get("event_id", np.arange(start, start + ev.n_events, dtype=np.int64))
                    if "event_id" not in ev.per_event:
                        ev.per_event["event_id"] = ids
                    score = predict(net, ncfg, ev, device=device)[:, cols]  # (n, S)
                    wts = filter_weights(score, ids, cfg, seed)
                    kept = select_events(ev, wts, skims)
                    if kept.n_events:
                        w.append(smc=kept)
                    n_in += ev.n_events
                    n_kept += kept.n_events
                    for j, s in enumerate(skims):
                        wj = wts[:, j][wts[:, j] > 0].astype(np.float64)
                        st = stats[s]
                        st["n_kept"] += len(wj)
                        st["sum_w"] += float(wj.sum())
                        st["sum_w2"] += float((wj**2).sum())
                        st["max_w"] = max(st["max_w"], float(wj.max(initial=0.0)))
                    bar.update(ev.n_events)
            finally:
                bar.close()
            if n_kept == 0:  # an empty but valid file
                w.append(smc=select_events(f.read_smc(0, 0), np.zeros((0, len(skims)), np.float32), skims))
            w.attrs["n_input_events"] = int(n_in)
    for st in stats.values():
        st["n_eff"] = st["sum_w"] ** 2 / st["sum_w2"] if st["sum_w2"] > 0 else 0.0
    return {"n_input_events": n_in, "n_kept": n_kept, "skims": stats}
