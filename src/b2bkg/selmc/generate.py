"""Generator-level events for selective MC: Y(4S) -> B Bbar, continuum q qbar, tau pairs.

Everything is vectorized over a chunk of events; each event draws its randomness from its own
key (:func:`b2bkg.selmc.counter_rng.event_keys` over ``event_rng(seed, "smc.generate", i)``), hashed
with the index of the particle concerned, so the output does not depend on the chunking.

Samples (``sample=``):
    ``charged`` Y(4S) -> B+ B-; ``mixed`` Y(4S) -> B0 anti-B0 (time-integrated mixing: with
    probability chi_d = 0.1875 one B, chosen at random, carries the flavour of the other);
    ``uubar``/``ddbar``/``ssbar``/``ccbar``: e+e- -> gamma* -> q qbar, one string of mass sqrt(s)
    along a jet axis drawn from 1 + cos^2(theta), fragmented by :mod:`b2bkg.selmc.fragment` with
    the longitudinal string kinematics of :func:`b2bkg.selmc.kinematics.string_momenta`; ``taupair``:
    gamma* -> tau+ tau- with 1 + cos^2(theta). No ISR, no FSR (PHOTOS), no B-meson angular
    correlations.

Decays: unstable particles (everything but e, mu, pi+-, K+-, p, n, gamma, K_L, neutrinos) decay
through :class:`b2bkg.selmc.decays.DecayTable`, generation by generation: a channel is drawn by
branching fraction among those open at the particle's (Breit-Wigner sampled) mass, daughter masses
are sampled (truncated Breit-Wigner, Gaussian for Xu / Xs) below the parent mass, quark-level
channels are fragmented, and momenta come from n-body phase space, boosted to the lab. The decay
point and time follow the proper lifetime (exponential, c*tau from the PDG) and the parent's
momentum: ``vertex = production vertex + (p / m) c t*``, ``time = production time + (E / m) t*``.

MCParticles layout (mother index within the event, -1 for the primary):
    Y(4S) [0] -> B, Bbar -> ...;  gamma* (pdg 10022) [0] -> q [1], qbar [2]; string (92) [3,
    mother q] -> primary hadrons -> ...; gamma* [0] -> tau-, tau+ -> ...
Quark-level B decays do not store their partons: the hadrons are direct B daughters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr, ndtri

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import SmcEvents

from .counter_rng import choice_cum, exponential, uniform
from .decays import KIND_PARTONS, SHAPE_BW, SHAPE_GAUSS, DecayTable, load_decay_table
from .kinematics import C_CM_PER_NS, Beams, boost, isotropic, mass_of, phase_space, rotate_z_to, string_momenta, two_body_momentum

__all__ = ["SAMPLES", "GeneratorConfig", "generate_events", "CHI_D"]

SAMPLES = ("charged", "mixed", "uubar", "ddbar", "ssbar", "ccbar", "taupair")
CONTINUUM_FLAVOUR = {"uubar": 2, "ddbar": 1, "ssbar": 3, "ccbar": 4}
CHI_D = 0.1875
DMAX = 24
# purposes (counter slots) of the hashed random numbers
_P_LIFE, _P_CHAN, _P_MASS, _P_NB, _P_CHAIN, _P_PS, _P_MIX, _P_AXIS = 11, 12, 13, 14, 15, 16, 17, 18


@dataclass(frozen=True)
class GeneratorConfig:
    """Tunable constants of the generator.

    ``breaks_decay``: mean number of string breaks per colour singlet in quark-level decays
    (Poisson); ``breaks_continuum``: mean breaks of the continuum string (Poisson, >= 1);
    ``max_breaks_decay`` / ``max_hadrons_string``: caps; ``sigma_kick_gev``: transverse kick per break.
    """

    breaks_decay: float = 0.8
    breaks_continuum: float = 6.0
    max_breaks_decay: int = 6
    max_hadrons_string: int = 32
    sigma_kick_gev: float = 0.30
    beams: Beams = field(default_factory=Beams)


class _Store:
    """Particles emitted so far (lists of per-generation arrays) and per-event counters."""

    def __init__(self, n_events: int):
        self.n = np.zeros(n_events, np.int64)
        self.cols: dict[str, list] = {k: [] for k in ("ev", "idx", "pid", "mother", "p4", "mass", "vtx", "t")}

    def emit(self, ev, order, pid, mother, p4, mass, vtx, t) -> dict:
        """Append particles; local indices follow (event, order). Returns the rows in that order."""
        o = np.lexsort((order, ev))
        ev, pid, mother, p4, mass, vtx, t = ev[o], pid[o], mother[o], p4[o], mass[o], vtx[o], t[o]
        start = np.r_[True, ev[1:] != ev[:-1]] if len(ev) else np.zeros(0, bool)
        first = np.maximum.accumulate(np.where(start, np.arange(len(ev)), 0)) if len(ev) else np.zeros(0, np.int64)
        idx = self.n[ev] + (np.arange(len(ev)) - first)
        np.add.at(self.n, ev, 1)
        rows = dict(ev=ev, idx=idx, pid=pid, mother=mother, p4=p4, mass=mass, vtx=vtx, t=t)
        for k, v in rows.items():
            self.cols[k].append(v)
        return rows

    def build(self, table: DecayTable, event_ids: np.ndarray) -> SmcEvents:
        c = {k: np.concatenate(v) for k, v in self.cols.items()}
        o = np.lexsort((c["idx"], c["ev"]))
        c = {k: v[o] for k, v in c.items()}
        offsets = np.concatenate([[0], np.cumsum(self.n)]).astype(np.int64)
        particles = {
            "pdg": table.pdg[c["pid"]], "mother": c["mother"],
            "px": c["p4"][:, 0], "py": c["p4"][:, 1], "pz": c["p4"][:, 2], "energy": c["p4"][:, 3],
            "vx": c["vtx"][:, 0], "vy": c["vtx"][:, 1], "vz": c["vtx"][:, 2], "time": c["t"],
        }
        return SmcEvents(offsets, particles, {"event_id": np.asarray(event_ids, np.int64)})


def _sample_masses(table: DecayTable, pid, valid, key, owner, salt, slot, fallback):
    """Masses (GeV) of particles ``pid`` (any shape): truncated Breit-Wigner / Gaussian / fixed."""
    m0 = table.mass[pid]
    lo, hi, w = table.mass_lo[pid], table.mass_hi[pid], np.maximum(table.width[pid], 1e-12)
    shape = table.shape[pid]
    if fallback:
        return np.where(valid & (shape > 0), lo, np.where(valid, m0, 0.0))
    u = uniform(key, owner, _P_MASS, salt, slot)
    a_lo = np.arctan((lo - m0) / (0.5 * w))
    a_hi = np.arctan((hi - m0) / (0.5 * w))
    bw = m0 + 0.5 * w * np.tan(a_lo + u * (a_hi - a_lo))
    g_lo, g_hi = ndtr((lo - m0) / w), ndtr((hi - m0) / w)
    ga = m0 + w * ndtri(np.clip(g_lo + u * (g_hi - g_lo), 1e-15, 1 - 1e-15))
    m = np.where(shape == SHAPE_BW, bw, np.where(shape == SHAPE_GAUSS, ga, m0))
    return np.where(valid, np.clip(m, lo, np.maximum(hi, lo)), 0.0)


def _choose_channels(table: DecayTable, pid, mass, key, idx):
    """Channel row per particle among channels open at its mass (-1 if none is open)."""
    u = uniform(key, idx, _P_CHAN)
    ch = np.searchsorted(table.gcum, pid + u, side="right")
    ch = np.minimum(ch, len(table.gcum) - 1)
    need = mass < table.open_max_threshold[pid]
    if need.any():
        r = np.nonzero(need)[0]
        first, cnt = table.ch_first[pid[r]], table.ch_count[pid[r]]
        seg = np.repeat(np.arange(len(r)), cnt)
        cidx = np.repeat(first - np.cumsum(np.r_[0, cnt[:-1]]), cnt) + np.arange(cnt.sum())
        w = table.ch_bf[cidx] * (table.ch_threshold[cidx] < mass[r][seg])
        cs = np.cumsum(w)
        ends = np.cumsum(cnt)
        base = np.r_[0.0, cs][ends - cnt]
        within = cs - base[seg]
        tot = within[ends - 1]
        target = u[r] * tot
        below = np.bincount(seg, weights=within < target[seg], minlength=len(r)).astype(np.int64)
        pick = np.where(tot > 0, first + np.minimum(below, cnt - 1), -1)
        ch[r] = pick
    return ch


def _poisson_cum(lam: float, kmax: int) -> np.ndarray:
    k = np.arange(kmax + 1)
    from scipy.stats import poisson

    c = poisson.cdf(k, lam)
    c[-1] = 1.0
    return c


def _explicit_daughters(table, ch, rows_key, rows_idx, M, attempts=20):
    """Daughter pids (R, DMAX) (-1 pad), counts, masses for explicit channels."""
    R = len(ch)
    cnt = table.ch_dcount[ch]
    col = np.arange(DMAX)[None, :]
    valid = col < cnt[:, None]
    pids = np.where(valid, table.dau[np.minimum(table.ch_dfirst[ch][:, None] + col, len(table.dau) - 1)], -1)
    masses = np.zeros((R, DMAX))
    todo = np.arange(R)
    for a in range(attempts + 1):
        if len(todo) == 0:
            break
        m = _sample_masses(table, np.maximum(pids[todo], 0), valid[todo], rows_key[todo, None], rows_idx[todo, None], a, col, a == attempts)
        ok = (m.sum(1) < M[todo] - 1e-9) | (cnt[todo] == 1)
        masses[todo[ok]] = m[ok]
        if a == attempts:
            masses[todo[~ok]] = m[~ok]
        todo = todo[~ok]
    return pids, cnt, masses


def _parton_daughters(table, ch, key, idx, M, cfg: GeneratorConfig, attempts=16):
    """Daughters of quark-level channels: explicit daughters + fragmented singlets."""
    fl = table.flavour
    R = len(ch)
    K = cfg.max_breaks_decay
    ex_pids, ex_cnt, _ = _explicit_daughters(table, ch, key, idx, M, attempts=0)
    nsing = table.ch_nsing[ch]
    pcum = _poisson_cum(cfg.breaks_decay, K)
    col = np.arange(DMAX)[None, :]
    pids = np.full((R, DMAX), -1, np.int64)
    masses = np.zeros((R, DMAX))
    cnt = np.zeros(R, np.int64)
    failed = np.zeros(R, bool)
    todo = np.arange(R)
    for a in range(attempts + 1):
        if len(todo) == 0:
            break
        late = a >= attempts // 2
        t_ch, t_key, t_idx = ch[todo], key[todo], idx[todo]
        T = len(todo)
        parts = [ex_pids[todo, :4]]
        ok = np.ones(T, bool)
        for s in range(2):
            has = nsing[todo] > s
            ea = np.where(has, table.ch_sing[t_ch, s, 0], 2)
            eb = np.where(has, table.ch_sing[t_ch, s, 1], -2)
            nb = choice_cum(pcum, uniform(t_key, t_idx, _P_NB, a, s))
            if late:
                nb = np.zeros(T, np.int64)
            need_two = (s == 0) & (nsing[todo] == 1) & (ex_cnt[todo] == 0)
            nb = np.where(need_two, np.maximum(nb, 1), nb)
            out, nh = fl.chain(t_key, t_idx, np.full(T, 100 * a + s + _P_CHAIN * 1000), ea, eb, nb, K, vector_off=np.full(T, late))
            ok &= ~has | (nh == np.minimum(nb, K) + 1) | ((ea < -1000) & (eb > 1000) & (nh == np.maximum(np.minimum(nb, K), 1) + 1))
            parts.append(np.where(has[:, None], out, -1))
        allp = np.concatenate(parts + [np.full((T, DMAX), -1, np.int64)], 1)
        # compact valid entries to the left (stable order)
        order = np.argsort(allp < 0, axis=1, kind="stable")
        allp = np.take_along_axis(allp, order, 1)[:, :DMAX]
        n = (allp >= 0).sum(1)
        ok &= (n >= 2) & (n <= DMAX)
        valid = col < n[:, None]
        m = _sample_masses(table, np.maximum(allp, 0), valid, t_key[:, None], t_idx[:, None], 50 + a, col, a >= attempts - 2)
        ok &= m.sum(1) < M[todo] - 1e-9
        good = todo[ok]
        pids[good] = allp[ok]
        masses[good] = m[ok]
        cnt[good] = n[ok]
        todo = todo[~ok]
    failed[todo] = True
    return pids, cnt, masses, failed


def _decay_generation(table, keys, store: _Store, rows: dict, cfg: GeneratorConfig, stats: dict) -> dict:
    """Decay the given particles; emit and return their daughters."""
    ev, idx, pid = rows["ev"], rows["idx"], rows["pid"]
    key = keys[ev]
    p4, mass = rows["p4"], rows["mass"]
    # decay point
    ct = table.ctau[pid] * exponential(key, idx, _P_LIFE)
    ct = np.where(np.isfinite(ct), ct, 0.0)
    msafe = np.maximum(mass, 1e-9)
    dvtx = rows["vtx"] + p4[:, :3] / msafe[:, None] * ct[:, None]
    dt = rows["t"] + p4[:, 3] / msafe * ct / C_CM_PER_NS
    ch = _choose_channels(table, pid, mass, key, idx)
    stats["no_channel"] += int((ch < 0).sum())
    go = ch >= 0
    kinds = np.where(go, table.ch_kind[np.maximum(ch, 0)], -1)
    R = len(pid)
    dp = np.full((R, DMAX), -1, np.int64)
    dm = np.zeros((R, DMAX))
    dn = np.zeros(R, np.int64)
    ex = np.nonzero(kinds == 0)[0]
    if len(ex):
        a, b, c = _explicit_daughters(table, ch[ex], key[ex], idx[ex], mass[ex])
        dp[ex], dn[ex], dm[ex] = a, b, c
    pa = np.nonzero(kinds == KIND_PARTONS)[0]
    if len(pa):
        a, b, c, failed = _parton_daughters(table, ch[pa], key[pa], idx[pa], mass[pa], cfg)
        dp[pa], dn[pa], dm[pa] = a, b, c
        stats["fragmentation_failed"] += int(failed.sum())
        dn[pa[failed]] = 0
    # kinematics per number of daughters
    d4 = np.zeros((R, DMAX, 4))
    one = np.nonzero(dn == 1)[0]
    if len(one):
        d4[one, 0] = p4[one]
        dm[one, 0] = mass[one]
    beta = p4[:, :3] / p4[:, 3:4]
    for n in np.unique(dn[dn >= 2]):
        r = np.nonzero(dn == n)[0]
        q = phase_space(key[r], idx[r], np.full(len(r), _P_PS), mass[r], dm[r, :n])
        d4[r, :n] = boost(q, beta[r, None, :])
    # emit
    col = np.arange(DMAX)[None, :]
    sel = col < dn[:, None]
    rr, cc = np.nonzero(sel)
    out = store.emit(
        ev[rr], idx[rr] * DMAX + cc, dp[rr, cc], idx[rr], d4[rr, cc], dm[rr, cc], dvtx[rr], dt[rr]
    )
    return out


def _pending(table, rows):
    keep = ~table.stable[rows["pid"]]
    return {k: v[keep] for k, v in rows.items()}


def generate_events(keys: np.ndarray, event_ids: np.ndarray, sample: str, *, table: DecayTable | None = None,
                    cfg: GeneratorConfig | None = None, stats: dict | None = None) -> SmcEvents:
    """Generate one chunk of events.

    Args:
        keys: per-event 64-bit keys, shape (n,), uint64 (see :func:`b2bkg.selmc.counter_rng.event_keys`).
        event_ids: global event numbers stored as ``event_id``, shape (n,).
        sample: one of :data:`SAMPLES`.

    Returns:
        :class:`b2bkg.io.SmcEvents` with per-event ``event_id``.
    """
    if sample not in SAMPLES:
        raise ConfigError(f"--sample: {sample!r} is not one of {', '.join(SAMPLES)}")
    table = table or load_decay_table()
    cfg = cfg or GeneratorConfig()
    stats = stats if stats is not None else {}
    stats.setdefault("no_channel", 0)
    stats.setdefault("fragmentation_failed", 0)
    keys = np.asarray(keys, np.uint64)
    n = len(keys)
    ev = np.arange(n)
    store = _Store(n)
    beam_p4, ip = cfg.beams.sample(keys)
    W = mass_of(beam_p4)
    beta_cms = beam_p4[:, :3] / beam_p4[:, 3:4]
    zeros = np.zeros(n)
    minus1 = np.full(n, -1, np.int64)
    if sample in ("charged", "mixed"):
        y4s = table.pid("Upsilon(4S)")
        store.emit(ev, zeros, np.full(n, y4s), minus1, beam_p4, W, ip, zeros)
        b1, b2 = ("B+", "B-") if sample == "charged" else ("B0", "anti-B0")
        p1 = np.full(n, table.pid(b1))
        p2 = np.full(n, table.pid(b2))
        if sample == "mixed":
            mix = uniform(keys, 0, _P_MIX) < CHI_D
            first = uniform(keys, 0, _P_MIX, 1) < 0.5
            p1, p2 = np.where(mix & first, p2, p1), np.where(mix & ~first, p1, p2)
        mb = table.mass[table.pid(b1)]
        q = two_body_momentum(W, mb, mb)
        d = isotropic(uniform(keys, 0, _P_PS, 1), uniform(keys, 0, _P_PS, 2))
        e = np.sqrt(q**2 + mb**2)
        pa = np.concatenate([q[:, None] * d, e[:, None]], 1)
        pb = np.concatenate([-q[:, None] * d, e[:, None]], 1)
        rows = store.emit(
            np.r_[ev, ev], np.r_[zeros, zeros + 1], np.r_[p1, p2], np.zeros(2 * n, np.int64),
            boost(np.r_[pa, pb], np.r_[beta_cms, beta_cms]), np.full(2 * n, mb), np.r_[ip, ip], np.zeros(2 * n),
        )
    else:
        vpho = table.pid("vpho")
        store.emit(ev, zeros, np.full(n, vpho), minus1, beam_p4, W, ip, zeros)
        # jet / tau axis from 1 + cos^2(theta): inverse CDF (Cardano)
        r = 4.0 * uniform(keys, 0, _P_AXIS) - 2.0
        sq = np.sqrt(r * r + 1.0)
        cth = np.cbrt(r + sq) + np.cbrt(r - sq)
        phi = 2.0 * np.pi * uniform(keys, 0, _P_AXIS, 1)
        sth = np.sqrt(np.maximum(1 - cth**2, 0))
        axis = np.stack([sth * np.cos(phi), sth * np.sin(phi), cth], -1)
        if sample == "taupair":
            mt = table.mass[table.pid("tau-")]
            q = two_body_momentum(W, mt, mt)
            e = np.sqrt(q**2 + mt**2)
            pa = np.concatenate([q[:, None] * axis, e[:, None]], 1)
            pb = np.concatenate([-q[:, None] * axis, e[:, None]], 1)
            rows = store.emit(
                np.r_[ev, ev], np.r_[zeros, zeros + 1], np.r_[np.full(n, table.pid("tau-")), np.full(n, table.pid("tau+"))],
                np.zeros(2 * n, np.int64), boost(np.r_[pa, pb], np.r_[beta_cms, beta_cms]), np.full(2 * n, mt),
                np.r_[ip, ip], np.zeros(2 * n),
            )
        else:
            rows = _continuum(table, keys, store, CONTINUUM_FLAVOUR[sample], W, beta_cms, ip, axis, cfg, stats)
    rows = _pending(table, rows)
    for _gen in range(40):
        if len(rows["pid"]) == 0:
            break
        rows = _pending(table, _decay_generation(table, keys, store, rows, cfg, stats))
    return store.build(table, event_ids)


def _continuum(table, keys, store, flavour, W, beta_cms, ip, axis, cfg, stats):
    n = len(keys)
    ev = np.arange(n)
    zeros = np.zeros(n)
    names = {1: "d", 2: "u", 3: "s", 4: "c"}
    q, qb = table.pid(names[flavour]), table.pid("anti-" + names[flavour])
    half = 0.5 * W
    pq = np.concatenate([half[:, None] * axis, half[:, None]], 1)
    pqb = np.concatenate([-half[:, None] * axis, half[:, None]], 1)
    store.emit(np.r_[ev, ev], np.r_[zeros, zeros + 1], np.r_[np.full(n, q), np.full(n, qb)], np.zeros(2 * n, np.int64),
               boost(np.r_[pq, pqb], np.r_[beta_cms, beta_cms]), np.zeros(2 * n), np.r_[ip, ip], np.zeros(2 * n))
    beam_p4 = boost(np.stack([zeros, zeros, zeros, W], 1), beta_cms)
    store.emit(ev, zeros, np.full(n, table.pid("string")), np.ones(n, np.int64), beam_p4, W, ip, zeros)
    string_idx = 3
    K = cfg.max_hadrons_string
    fl = table.flavour
    pcum = _poisson_cum(cfg.breaks_continuum, K - 1)
    pids = np.full((n, K), -1, np.int64)
    p4 = np.zeros((n, K, 4))
    masses = np.zeros((n, K))
    todo = np.arange(n)
    col = np.arange(K)[None, :]
    for a in range(12):
        if len(todo) == 0:
            break
        T = len(todo)
        k = keys[todo]
        nb = np.maximum(choice_cum(pcum, uniform(k, string_idx, _P_NB, a)), 1)
        nb = np.maximum(nb - (a // 3), 1) if a >= 6 else nb
        out, nh = fl.chain(k, np.full(T, string_idx), np.full(T, 100 * a), np.full(T, flavour), np.full(T, -flavour), nb, K - 1)
        ok = nh == nb + 1
        valid = col < nh[:, None]
        m = _sample_masses(table, np.maximum(out, 0), valid, k[:, None], np.full((T, 1), string_idx), 200 + a, col, a >= 10)
        mom, ok2 = string_momenta(k, np.full(T, 1000 * a + string_idx), m, nh, W[todo], cfg.sigma_kick_gev)
        ok &= ok2
        g = todo[ok]
        pids[g], masses[g], p4[g] = out[ok], m[ok], mom[ok]
        todo = todo[~ok]
    stats["fragmentation_failed"] += len(todo)
    # rotate the string frame (+z = quark direction) onto the jet axis and boost to the lab
    lab = np.empty_like(p4)
    lab[..., :3] = rotate_z_to(p4[..., :3], np.broadcast_to(axis[:, None, :], p4[..., :3].shape))
    lab[..., 3] = p4[..., 3]
    lab = boost(lab, beta_cms[:, None, :])
    nh = (pids >= 0).sum(1)
    rr, cc = np.nonzero(col < nh[:, None])
    return store.emit(rr, cc.astype(np.float64), pids[rr, cc], np.full(len(rr), string_idx), lab[rr, cc], masses[rr, cc],
                      ip[rr], np.zeros(len(rr)))
