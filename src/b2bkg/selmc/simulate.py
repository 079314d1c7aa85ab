"""Library entry point of ``b2bkg simulate smc``: generation + skim emulation into the ``smc`` schema.

Example:
    >>> ev = next(iter_smc_chunks(4, seed=1, sample="mixed", chunk_size=4))
    >>> ev.n_events, int(ev.particles["pdg"][0])
    (4, 300553)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import SmcEvents

from .counter_rng import event_keys
from .decays import load_decay_table
from .generate import SAMPLES, GeneratorConfig, generate_events
from .skim import SKIMS, SkimConfig, skim_outputs

__all__ = [
    "simulate_smc", "iter_smc_chunks", "retention_table", "format_retention_table", "SEED_RETENTION",
    "decay_tokens", "decay_string", "OPEN", "CLOSE",
]

#: Seed 003's FEI skim retention in % (B+ skim, B0 skim) per generic sample.
SEED_RETENTION = {
    "mixed": (5.62, 4.25), "charged": (8.35, 3.82), "uubar": (6.86, 3.78), "ddbar": (7.20, 3.39),
    "ccbar": (12.0, 5.73), "ssbar": (6.13, 2.95), "taupair": (None, None),
}
OPEN, CLOSE = 1_000_000_001, 1_000_000_002


def _check(n_events, oracle_repeats, chunk_size, sample):
    if sample not in SAMPLES:
        raise ConfigError(f"--sample: {sample!r} is not one of {', '.join(SAMPLES)}")
    if int(n_events) < 0:
        raise ConfigError(f"--events: {n_events} must be >= 0")
    if int(oracle_repeats) < 0:
        raise ConfigError(f"--oracle-repeats: {oracle_repeats} must be >= 0")
    if int(chunk_size) < 1:
        raise ConfigError(f"chunk_size: {chunk_size} must be >= 1")


def iter_smc_chunks(n_events: int, seed: int, *, sample: str = "mixed", oracle_repeats: int = 0, chunk_size: int = 1000,
                    start: int = 0, skim: bool = True, gen_cfg: GeneratorConfig | None = None,
                    skim_cfg: SkimConfig | None = None, stats: dict | None = None) -> Iterator[SmcEvents]:
    """Events ``start..start+n_events-1`` in chunks; identical output whatever ``chunk_size``.

    Generation draws from ``event_rng(seed, "smc.generate", i)``, the skim from
    ``event_rng(seed, "smc.skim", i)`` (its first value for the stored decision, the next
    ``oracle_repeats`` values as keys of independent re-runs for ``pass_prob_<skim>``).
    """
    _check(n_events, oracle_repeats, chunk_size, sample)
    table = load_decay_table()
    for a in range(start, start + n_events, chunk_size):
        b = min(a + chunk_size, start + n_events)
        ev = generate_events(event_keys(seed, "smc.generate", a, b), np.arange(a, b), sample, table=table, cfg=gen_cfg, stats=stats)
        if skim:
            out = skim_outputs(ev, event_keys(seed, "smc.skim", a, b, n_keys=1 + oracle_repeats), skim_cfg)
            ev.per_event.update(out)
            ev = SmcEvents(ev.offsets, ev.particles, ev.per_event)
        yield ev


def simulate_smc(n_events: int, seed: int, out, *, sample: str = "mixed", oracle_repeats: int = 0, chunk_size: int = 1000,
                 command: str = "") -> Path:
    """Generate ``n_events`` events of ``sample`` with skim labels into ``out`` (.h5 / .root).

    Returns the output path. Root attributes record ``sample``, ``oracle_repeats`` and the
    generator throughput.
    """
    from b2bkg.core.progress import progress
    from b2bkg.io import FileWriter

    _check(n_events, oracle_repeats, chunk_size, sample)
    out = Path(out)
    import decaylanguage

    from b2bkg.core.config import to_dict
    from b2bkg.core.provenance import simulator_hash

    physics = {"generator": to_dict(GeneratorConfig()), "skim": to_dict(SkimConfig()),
               "decaylanguage": decaylanguage.__version__}
    attrs = {"sample": sample, "oracle_repeats": int(oracle_repeats), "skims": ",".join(SKIMS),
             "decay_file": "decaylanguage DECAY_BELLE2.DEC", "simulator_hash": simulator_hash("smc", physics)}
    t0 = time.perf_counter()
    with FileWriter(out, seed=seed, command=command, attrs=attrs) as w:
        bar = progress(total=n_events, desc=f"simulate smc ({sample})", unit="ev")
        try:
            for ev in iter_smc_chunks(n_events, seed, sample=sample, oracle_repeats=oracle_repeats, chunk_size=chunk_size):
                w.append(smc=ev)
                bar.update(ev.n_events)
        finally:
            bar.close()
        w.attrs["events_per_s"] = float(n_events / max(time.perf_counter() - t0, 1e-9))
    return out


def retention_table(n_events: int = 20000, seed: int = 1, *, samples=SAMPLES, chunk_size: int = 2000,
                    skim_cfg: SkimConfig | None = None) -> dict[str, dict[str, float]]:
    """Skim retention (%) per sample and skim on ``n_events`` events each, with its binomial error."""
    from b2bkg.core.progress import progress

    res = {}
    for s in progress(samples, desc="retention", unit="sample"):
        n_pass = dict.fromkeys(SKIMS, 0)
        n = 0
        for ev in iter_smc_chunks(n_events, seed, sample=s, chunk_size=chunk_size, skim_cfg=skim_cfg):
            n += ev.n_events
            for k in SKIMS:
                n_pass[k] += int(ev.per_event[f"passed_{k}"].sum())
        row = {}
        for k in SKIMS:
            p = n_pass[k] / max(n, 1)
            row[k] = 100.0 * p
            row[k + "_err"] = 100.0 * np.sqrt(p * (1 - p) / max(n, 1))
        row["n_events"] = n
        res[s] = row
    return res


def format_retention_table(res: dict) -> str:
    """Markdown table of measured retention beside seed 003's."""
    lines = ["| sample | B+ skim (here) | B+ skim (seed) | B0 skim (here) | B0 skim (seed) | events |", "|---|---|---|---|---|---|"]
    for s, row in res.items():
        sb, s0 = SEED_RETENTION.get(s, (None, None))
        fmt = lambda v: "-" if v is None else f"{v:.2f} %"  # noqa: E731
        lines.append(
            f"| {s} | {row['fei_bplus']:.2f} +- {row['fei_bplus_err']:.2f} % | {fmt(sb)} | "
            f"{row['fei_b0']:.2f} +- {row['fei_b0_err']:.2f} % | {fmt(s0)} | {row['n_events']} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ decay strings
def decay_tokens(events: SmcEvents) -> tuple[np.ndarray, np.ndarray]:
    """Decay trees of all events as flat token sequences (vectorized).

    Tokens are PDG codes in depth-first pre-order with :data:`OPEN` after a particle that has
    daughters and :data:`CLOSE` after its last descendant.

    Returns:
        (offsets (n_events+1,) int64, tokens (n_tokens,) int64).
    """
    off = events.offsets
    n = events.n_events
    N = int(off[-1])
    if N == 0:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int64)
    evi = np.repeat(np.arange(n), np.diff(off))
    mother = events.particles["mother"].astype(np.int64)
    gm = np.where(mother >= 0, off[evi] + mother, -1)
    # sibling rank: particles of one mother are ordered by index
    key_m = np.where(gm >= 0, gm, -1 - evi)  # roots grouped per event
    o = np.lexsort((np.arange(N), key_m))
    km = key_m[o]
    start = np.r_[True, km[1:] != km[:-1]]
    first = np.maximum.accumulate(np.where(start, np.arange(N), 0))
    rank = np.empty(N, np.int64)
    rank[o] = np.arange(N) - first
    # ancestor chain -> path columns (root first)
    cols = [rank]
    anc = gm.copy()
    depth = np.zeros(N, np.int64)
    while (anc >= 0).any():
        has = anc >= 0
        depth += has
        cols.append(np.where(has, rank[np.maximum(anc, 0)], -1))
        anc = np.where(has, gm[np.maximum(anc, 0)], -1)
    D = len(cols)
    path = np.full((N, D), -1, np.int64)
    for j in range(D):
        # column j of cols is the ancestor j levels up; put it at position depth - j
        pos = depth - j
        ok = pos >= 0
        path[np.nonzero(ok)[0], pos[ok]] = cols[j][ok]
    order = np.lexsort(tuple(path[:, j] for j in range(D - 1, -1, -1)) + (evi,))
    has_dau = np.zeros(N, bool)
    has_dau[gm[gm >= 0]] = True
    ev_o, dep_o, hd_o = evi[order], depth[order], has_dau[order]
    pdg_o = events.particles["pdg"][order].astype(np.int64)
    last = np.r_[ev_o[1:] != ev_o[:-1], True]
    nxt_depth = np.r_[dep_o[1:], 0]
    closes = np.where(last, dep_o + hd_o, dep_o + hd_o - nxt_depth)
    per = 1 + hd_o + closes
    tok_off = np.concatenate([[0], np.cumsum(per)])
    tokens = np.full(int(tok_off[-1]), CLOSE, np.int64)
    tokens[tok_off[:-1]] = pdg_o
    tokens[tok_off[:-1][hd_o] + 1] = OPEN
    ev_counts = np.bincount(ev_o, weights=per, minlength=n).astype(np.int64)
    return np.concatenate([[0], np.cumsum(ev_counts)]), tokens


def decay_string(events: SmcEvents, i: int = 0) -> str:
    """Decay string of event ``i``, e.g. ``"-511 ( 443 ( -13 13 310 ( 211 -211 ) ) )"``."""
    one = events.slice(i, i + 1)
    _, tok = decay_tokens(one)
    return " ".join("(" if t == OPEN else ")" if t == CLOSE else str(int(t)) for t in tok)
