"""A simple, documented string-like fragmentation of colour-singlet parton systems into hadrons.

Used for the continuum (e+e- -> q qbar), for the quark-level inclusive modes of the decay table
(``PYTHIA`` models: b -> c u dbar, b -> c cbar s, ..., J/psi -> g g g, Xu -> u ubar, ...) and
for the pseudo-particles Xu / Xs. No parton shower, no gluon kinks.

Flavour model (a Lund-like flavour chain, vectorized over strings):
    A singlet runs from a colour-triplet end ``A`` (quark, or anti-diquark) to an anti-triplet end
    ``B`` (antiquark, or diquark). ``n_breaks`` new pairs are created; each break is a light
    q qbar pair (u : d : s = 0.435 : 0.435 : 0.13) or, with probability ``P_DIQUARK`` when the current
    end is a quark, a diquark / anti-diquark pair (ud, uu, dd, us, ds), which makes a baryon -
    antibaryon pair. Adjacent ends form hadrons: quark + antiquark -> pseudoscalar or vector meson
    (vector fraction 0.45 light, 0.55 with strangeness, 0.6 with charm; u ubar / d dbar mix into
    pi0 / eta / eta' / rho0 / omega), quark + diquark -> octet or decuplet baryon (decuplet
    fraction 0.25) by flavour content.

Kinematics are chosen by the caller: isotropic n-body phase space for decays
(:func:`b2bkg.selmc.kinematics.phase_space`) and an ordered-rapidity longitudinal string model
for the continuum (:func:`b2bkg.selmc.kinematics.string_momenta`).

Parton codes follow the PDG: quarks +-1..4 (d u s c), diquarks +-(1000a + 100b + 2s+1),
gluon 21, random light flavour 82 (``rndmflav``).
"""

from __future__ import annotations

import numpy as np

from .counter_rng import choice_cum, uniform

__all__ = [
    "P_DIQUARK", "LIGHT_FLAVOURS", "meson_options", "baryon_options", "fragmentation_pdgs",
    "is_triplet", "resolve_singlets", "FlavourTables",
]

P_DIQUARK = 0.07
LIGHT_FLAVOURS = np.array([2, 1, 3])  # u d s
LIGHT_WEIGHTS = np.array([0.435, 0.435, 0.13])
DIQUARKS = np.array([[2, 1], [2, 2], [1, 1], [3, 2], [3, 1]])  # (a >= b) flavours
DIQUARK_WEIGHTS = np.array([0.5, 0.15, 0.15, 0.1, 0.1])
RANDOM_FLAVOUR = 82
GLUON = 21

_PV = {  # (quark, antiquark) -> (pseudoscalar, vector) for flavoured mesons (quark first)
    (2, 1): (211, 213), (2, 3): (321, 323), (1, 3): (311, 313),
    (4, 2): (421, 423), (4, 1): (411, 413), (4, 3): (431, 433),
}


def _vector_fraction(q: int, qb: int) -> float:
    if 4 in (q, qb):
        return 0.6
    if 3 in (q, qb):
        return 0.55
    return 0.45


def meson_options(q: int, qb: int) -> list[tuple[int, float]]:
    """Mesons made of quark flavour ``q`` and antiquark flavour ``qb`` (1..4) with probabilities."""
    fv = _vector_fraction(q, qb)
    if q == qb:
        if q in (1, 2):
            return [(111, 0.6 * (1 - fv)), (221, 0.3 * (1 - fv)), (331, 0.1 * (1 - fv)), (113, 0.5 * fv), (223, 0.5 * fv)]
        if q == 3:
            return [(221, 0.5 * (1 - fv)), (331, 0.5 * (1 - fv)), (333, fv)]
        return [(441, 1 - fv), (443, fv)]
    if (q, qb) in _PV:
        p, v = _PV[(q, qb)]
        return [(p, 1 - fv), (v, fv)]
    p, v = _PV[(qb, q)]
    return [(-p, 1 - fv), (-v, fv)]


_OCTET = {  # sorted flavour content (descending) -> octet options; decuplet options
    (2, 2, 2): ([], [2224]), (2, 2, 1): ([2212], [2214]), (2, 1, 1): ([2112], [2114]), (1, 1, 1): ([], [1114]),
    (3, 2, 2): ([3222], [3224]), (3, 2, 1): ([3122, 3122, 3212], [3214]), (3, 1, 1): ([3112], [3114]),
    (3, 3, 2): ([3322], [3324]), (3, 3, 1): ([3312], [3314]), (3, 3, 3): ([], [3334]),
    (4, 2, 1): ([4122, 4122, 4212], [4214]), (4, 2, 2): ([4222], [4224]), (4, 1, 1): ([4112], [4114]),
    (4, 3, 2): ([4232, 4322], [4324]), (4, 3, 1): ([4132, 4312], [4314]), (4, 3, 3): ([4332], [4334]),
}
DECUPLET_FRACTION = 0.25


def baryon_options(f1: int, f2: int, f3: int) -> list[tuple[int, float]]:
    """Baryons of flavour content (f1, f2, f3) (quarks 1..4) with probabilities (empty if unknown)."""
    key = tuple(sorted((f1, f2, f3), reverse=True))
    if key not in _OCTET:
        return []
    octet, dec = _OCTET[key]
    fd = DECUPLET_FRACTION if octet else 1.0
    out = [(p, (1 - fd) / len(octet)) for p in octet] + [(p, fd / len(dec)) for p in dec]
    merged: dict[int, float] = {}
    for p, w in out:
        merged[p] = merged.get(p, 0.0) + w
    return list(merged.items())


def fragmentation_pdgs() -> set[int]:
    """Every hadron PDG code the flavour chain can produce (both charges)."""
    out: set[int] = set()
    for q in range(1, 5):
        for qb in range(1, 5):
            out |= {p for p, _ in meson_options(q, qb)}
    for key in _OCTET:
        for p, _ in baryon_options(*key):
            out |= {p, -p}
    return out


def is_triplet(code: int) -> bool:
    """Colour-triplet end: quark, anti-diquark or a random light quark."""
    return (0 < code < 10) or code < -1000 or code == RANDOM_FLAVOUR


def resolve_singlets(partons: list[int]) -> list[tuple[int, int]] | None:
    """Pair a channel's partons into colour singlets (A triplet, B anti-triplet); None if impossible.

    Gluons are absorbed (a pure-gluon system becomes one singlet of random light flavour),
    quarks are paired in order (p0, p1), (p2, p3) as PYTHIA's B-decay modes list them.
    """
    qs = [p for p in partons if p != GLUON]
    if not qs:
        return [(RANDOM_FLAVOUR, -RANDOM_FLAVOUR)]
    if len(qs) % 2 or len(qs) > 4:
        return None
    pairings = [[(0, 1), (2, 3)], [(0, 3), (1, 2)], [(0, 2), (1, 3)]] if len(qs) == 4 else [[(0, 1)]]
    for pairing in pairings:
        out = []
        for i, j in pairing:
            a, b = qs[i], qs[j]
            if is_triplet(a) and not is_triplet(b):
                out.append((a, b))
            elif is_triplet(b) and not is_triplet(a):
                out.append((b, a))
            else:
                break
        else:
            if all(_valid_ends(a, b) for a, b in out):
                return out
    return None


def _valid_ends(a: int, b: int) -> bool:
    fa, fb = _flav(a), _flav(b)
    return all(1 <= f <= 4 or f == RANDOM_FLAVOUR for f in fa + fb)


def _flav(code: int) -> list[int]:
    c = abs(code)
    if c == RANDOM_FLAVOUR or c < 10:
        return [c]
    return [c // 1000, (c // 100) % 10]


class FlavourTables:
    """Lookup arrays for the vectorized flavour chain, in the pid numbering of a decay table.

    ``meson[q, qb]`` and ``baryon[a, b, c]`` index a combination; ``cum[k]`` are cumulative
    probabilities over its options and ``pid[k]`` / ``anti_pid[k]`` the table rows of the hadron
    and of its antiparticle (shape (n_combos, 6)).
    """

    def __init__(self, pid_of_pdg, mass_of_pid: np.ndarray, usable=lambda pid: True):
        self.meson = np.full((5, 5), -1, np.int64)
        self.baryon = np.full((5, 5, 5), -1, np.int64)
        cums, pids, apids, lightest = [], [], [], []

        def add(opts):
            def ok(p):
                a, b = pid_of_pdg(p), pid_of_pdg(-p if _has_anti(p) else p)
                return a is not None and b is not None and usable(a) and usable(b)

            opts = [(p, w) for p, w in opts if ok(p)]
            if not opts:
                return -1
            w = np.array([o[1] for o in opts])
            cum = np.full(6, 1.0)
            cum[: len(w)] = np.cumsum(w / w.sum())
            pid = np.array([pid_of_pdg(o[0]) for o in opts] + [pid_of_pdg(opts[-1][0])] * (6 - len(opts)))
            apid = np.array([pid_of_pdg(-o[0] if _has_anti(o[0]) else o[0]) for o in opts])
            apid = np.concatenate([apid, [apid[-1]] * (6 - len(opts))])
            cums.append(cum)
            pids.append(pid)
            apids.append(apid)
            lightest.append(mass_of_pid[pid[: len(opts)]].min())
            return len(cums) - 1

        for q in range(1, 5):
            for qb in range(1, 5):
                self.meson[q, qb] = add(meson_options(q, qb))
        for a in range(1, 5):
            for b in range(1, 5):
                for c in range(1, 5):
                    self.baryon[a, b, c] = add(baryon_options(a, b, c))
        self.cum = np.array(cums)
        self.pid = np.array(pids, np.int64)
        self.anti_pid = np.array(apids, np.int64)
        self.lightest = np.array(lightest)

    def lightest_singlet_mass(self, a: int, b: int) -> float:
        """Lightest hadron mass a singlet (A, B) can make without breaks (GeV)."""
        fa, fb = _flav(a), _flav(b)
        fa = [2 if f == RANDOM_FLAVOUR else f for f in fa]
        fb = [2 if f == RANDOM_FLAVOUR else f for f in fb]
        if len(fa) == 1 and len(fb) == 1:
            return float(self.lightest[self.meson[fa[0], fb[0]]])
        if len(fa) == 1:  # quark + diquark
            k = self.baryon[fa[0], fb[0], fb[1]]
            return float(self.lightest[k]) if k >= 0 else np.inf
        if len(fb) == 1:  # anti-diquark + antiquark
            k = self.baryon[fa[0], fa[1], fb[0]]
            return float(self.lightest[k]) if k >= 0 else np.inf
        # two diquark ends need one break: baryon + antibaryon with a light quark
        kb = self.baryon[2, fb[0], fb[1]]
        ka = self.baryon[fa[0], fa[1], 2]
        return float(self.lightest[kb] + self.lightest[ka]) if kb >= 0 and ka >= 0 else np.inf

    def chain(self, key, owner, salt, end_a, end_b, n_breaks, max_breaks: int, vector_off=None):
        """Hadron pids of singlets, flavour chain from ``end_a`` to ``end_b``.

        Args:
            key: per-singlet event key, shape (S,), uint64.
            owner: per-singlet counter identifying the string in its event (e.g. parent index), (S,).
            salt: per-singlet extra counter (singlet slot, attempt), (S,).
            end_a, end_b: parton codes (A triplet, B anti-triplet), shape (S,), int.
            n_breaks: number of breaks per singlet, (S,), clipped to ``max_breaks``.
            vector_off: optional bool (S,): force pseudoscalars / octet baryons (lightest choice).

        Returns:
            pids (S, max_breaks+1) int64 (-1 padded, hadrons ordered from A to B), n_hadrons (S,).
        """
        S = len(end_a)
        nb = np.minimum(np.asarray(n_breaks, np.int64), max_breaks)
        end_a = np.asarray(end_a, np.int64).copy()
        end_b = np.asarray(end_b, np.int64).copy()
        # resolve random flavours (same flavour at both ends of a rndmflav pair)
        rnd = end_a == RANDOM_FLAVOUR
        if rnd.any():
            f = LIGHT_FLAVOURS[choice_cum(np.cumsum(LIGHT_WEIGHTS), uniform(key[rnd], owner[rnd], salt[rnd], 901))]
            end_a[rnd] = f
            end_b[rnd & (end_b == -RANDOM_FLAVOUR)] = -f[end_b[rnd] == -RANDOM_FLAVOUR]
        b_is_dq = end_b > 1000
        b_f1 = np.where(b_is_dq, end_b // 1000, -end_b)
        b_f2 = np.where(b_is_dq, (end_b // 100) % 10, 0)
        # current end: kind 0 quark (f1), 1 anti-diquark (f1, f2)
        kind = (end_a < -1000).astype(np.int64)
        f1 = np.where(kind == 1, (-end_a) // 1000, end_a)
        f2 = np.where(kind == 1, ((-end_a) // 100) % 10, 0)
        nb = np.where((kind == 1) & b_is_dq, np.maximum(nb, 1), nb)
        out = np.full((S, max_breaks + 1), -1, np.int64)
        vo = np.zeros(S, bool) if vector_off is None else np.asarray(vector_off, bool)
        lw = np.cumsum(LIGHT_WEIGHTS)
        dw = np.cumsum(DIQUARK_WEIGHTS)
        for k in range(max_breaks + 1):
            active = k < nb
            last = k == nb
            u = uniform(key, owner, salt, 1000 + k)
            uf = uniform(key, owner, salt, 2000 + k)
            uh = uniform(key, owner, salt, 3000 + k)
            # break flavours
            qf = LIGHT_FLAVOURS[choice_cum(lw, uf)]
            dq = DIQUARKS[choice_cum(dw, uf)]
            use_dq = active & (kind == 0) & (u < P_DIQUARK) & ~((k == nb - 1) & b_is_dq)
            combo = np.full(S, -1, np.int64)
            anti = np.zeros(S, bool)
            # hadron at this step (breaks) or final hadron (last)
            # quark + antiquark(qf) -> meson
            m_br = active & (kind == 0) & ~use_dq
            combo[m_br] = self.meson[f1[m_br], qf[m_br]]
            b_br = active & (kind == 0) & use_dq
            combo[b_br] = self.baryon[f1[b_br], dq[b_br, 0], dq[b_br, 1]]
            ab_br = active & (kind == 1)
            combo[ab_br] = self.baryon[f1[ab_br], f2[ab_br], qf[ab_br]]
            anti[ab_br] = True
            # final hadron with end B
            fm = last & (kind == 0) & ~b_is_dq
            combo[fm] = self.meson[f1[fm], b_f1[fm]]
            fb = last & (kind == 0) & b_is_dq
            combo[fb] = self.baryon[f1[fb], b_f1[fb], b_f2[fb]]
            fa = last & (kind == 1) & ~b_is_dq
            combo[fa] = self.baryon[f1[fa], f2[fa], b_f1[fa]]
            anti[fa] = True
            ok = combo >= 0
            c = np.where(ok, combo, 0)
            j = choice_cum(self.cum[c], uh)
            j = np.where(vo, 0, j)
            pid = np.where(anti, self.anti_pid[c, j], self.pid[c, j])
            out[:, k] = np.where(ok & (active | last), pid, -1)
            # advance the current end
            nk = np.where(m_br | ab_br, 0, np.where(b_br, 1, kind))
            nf1 = np.where(m_br | ab_br, qf, np.where(b_br, dq[:, 0], f1))
            nf2 = np.where(b_br, dq[:, 1], np.where(m_br | ab_br, 0, f2))
            kind, f1, f2 = nk, nf1, nf2
        n_had = (out >= 0).sum(1)
        return out, n_had


def _has_anti(pdg: int) -> bool:
    return pdg not in (111, 221, 331, 113, 223, 333, 441, 443)
