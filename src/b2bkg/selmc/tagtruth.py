"""Generator-level tag reconstructibility: does a B's *true* decay tree match an FEI tag channel?

The skim emulator (:mod:`b2bkg.selmc.skim`) reconstructs tag B mesons in a fixed list of channels
(:data:`~b2bkg.selmc.skim.CHANNELS`) from D/D*/D_s/J/psi sub-decays built out of tracks, photons,
pi0 and K_S. The generator knows the decay tree exactly, so it can say, without any detector
randomness, whether a B *could* be reconstructed correctly: this is legitimate generator-level
information (like the decay string), evaluated on the true tree only. The detector response
(which tracks are found, smearing, PID, score spread, wrong combinations) stays in the emulator;
these features only summarise the tree the way the FEI's channel list sees it.

Reconstruction-level children: a particle's *reco children* are its descendants reached through
"transparent" short-lived resonances (anything that decays and is not on a reconstructed list:
K*, rho, a1, omega, eta, phi, K0 -> K_S/K_L ...). Reconstructed kinds (:data:`CATEGORIES`): pi, K,
pi0, K_S, gamma, e, mu, D0, D+, D_s+, D*+, D*0, D_s*+, J/psi; every other stable particle
(neutrinos, K_L, n, p, ...) is "other" and spoils a match. Charges are not compared (the
generator conserves them).

Per particle (all (n_particles,) float64):
    ``reco_match``: its reco children form a listed mode (pi0 -> gamma gamma, K_S -> pi pi, the
        emulator's D0, D+, D_s, J/psi, D*, D_s* modes, the B channels of the skim of its charge);
    ``reco_ok``: matched and every reco child reconstructible (tracks: pT > 0.05 GeV in 17-150 deg;
        photons: E > 30 MeV in 12.4-155.1 deg; composites: recursively ``reco_ok``);
    ``reco_eff``: expected detection probability of the reco leaves (product of the emulator's
        track efficiency, with its displaced-vertex loss, and photon efficiency); 0 if not ``reco_ok``;
        for a final-state track or photon its own efficiency;
    ``tag_prior``: on B mesons, the largest channel prior (:data:`~b2bkg.selmc.skim.CHANNELS`) among
        the matched channels (0 if none).
Per event ((n_events,) float64): ``tag_b0`` / ``tag_bplus`` = max over the event's B0 / B+ of
``tag_prior * reco_eff`` (the expected correctly-reconstructed-tag strength), and ``n_reco_charm``
= number of ``reco_ok`` D, D*, D_s, D_s*, J/psi.
"""

from __future__ import annotations

import numpy as np

from b2bkg.io.events import SmcEvents

from .features import flat_tree

__all__ = ["CATEGORIES", "TAG_PARTICLE_FEATURES", "TAG_EVENT_FEATURES", "tag_reconstructibility"]

# reconstructed kinds, column index in the reco-children count matrix; column N = "other"
CATEGORIES = (211, 321, 111, 310, 22, 11, 13, 421, 411, 431, 413, 423, 433, 443)
_COL = {c: i for i, c in enumerate(CATEGORIES)}
_OTHER = len(CATEGORIES)
_NCOL = _OTHER + 1
TAG_PARTICLE_FEATURES = ("reco_match", "reco_ok", "reco_eff", "tag_prior")
TAG_EVENT_FEATURES = ("tag_b0", "tag_bplus", "n_reco_charm")

# sub-decay modes of the emulator's lists (skim._build_lists), as {kind: count}
_MODES = {
    111: [{22: 2}],
    310: [{211: 2}],
    421: [{321: 1, 211: 1}, {321: 1, 211: 1, 111: 1}, {321: 1, 211: 3}, {310: 1, 211: 2}, {310: 1, 111: 1}],
    411: [{321: 1, 211: 2}, {310: 1, 211: 1}, {321: 2, 211: 1}, {321: 1, 211: 2, 111: 1}, {310: 1, 211: 1, 111: 1}],
    431: [{321: 2, 211: 1}, {310: 1, 321: 1}],
    443: [{11: 2}, {13: 2}],
    413: [{421: 1, 211: 1}, {411: 1, 111: 1}],
    423: [{421: 1, 111: 1}, {421: 1, 22: 1}],
    433: [{431: 1, 22: 1}],
}
_CHARM = {"D0": {421: 1}, "Dp": {411: 1}, "Dstp": {413: 1}, "Dst0": {423: 1}, "Jpsi": {443: 1}}
_BACHELOR = {
    "pi": {211: 1}, "pipi0": {211: 1, 111: 1}, "pipipi": {211: 3}, "pipi": {211: 2}, "pipipi0": {211: 2, 111: 1},
    "Ds": {431: 1}, "Dsst": {433: 1}, "D0K": {421: 1, 321: 1}, "K": {321: 1}, "Kpi": {321: 1, 211: 1},
    "KSpi": {310: 1, 211: 1}, "KS": {310: 1},
}
_B_OF_SKIM = {"fei_b0": 511, "fei_bplus": 521}
_CHARM_KINDS = (421, 411, 431, 413, 423, 433, 443)


def _pattern(mode: dict) -> np.ndarray:
    v = np.zeros(_NCOL, np.int64)
    for kind, cnt in mode.items():
        v[_COL[kind]] += cnt
    return v


def _b_channels() -> dict[int, list[tuple[np.ndarray, float]]]:
    """B PDG -> [(pattern, prior)] from the emulator's channel list."""
    from .skim import CHANNELS

    out = {}
    for skim, chans in CHANNELS.items():
        rows = []
        for _name, charm, bach, prior in chans:
            mode = dict(_CHARM[charm])
            for kind, cnt in _BACHELOR[bach].items():
                mode[kind] = mode.get(kind, 0) + cnt
            rows.append((_pattern(mode), float(prior)))
        out[_B_OF_SKIM[skim]] = rows
    return out


def _leaf_efficiency(apdg, pt, theta, e, rvtx, leaf) -> np.ndarray:
    """The emulator's detection probability of each final-state track / photon (0 outside acceptance)."""
    from .skim import SkimConfig

    cfg = SkimConfig()
    in_cdc = (theta > cfg.theta_min_deg) & (theta < cfg.theta_max_deg)
    track = leaf & np.isin(apdg, (11, 13, 211, 321, 2212)) & in_cdc & (pt > 0.05)
    displaced = np.where(rvtx > 1.0, np.clip(1.0 - rvtx / 60.0, 0.0, 1.0) * 0.85, 1.0)  # as skim.detector
    t_eff = cfg.track_eff * (1 - np.exp(-np.maximum(pt - 0.05, 0) / 0.05)) * displaced
    photon = leaf & (apdg == 22) & (theta > 12.4) & (theta < 155.1) & (e > 0.03)
    return np.where(track, t_eff, np.where(photon, cfg.photon_eff, 0.0))


def tag_reconstructibility(events: SmcEvents) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Generator-level tag features (see the module docstring).

    Returns:
        (per_particle, per_event): dicts of float64 arrays, ``per_particle`` keyed by
        :data:`TAG_PARTICLE_FEATURES` (each (n_particles,)), ``per_event`` by
        :data:`TAG_EVENT_FEATURES` (each (n_events,)).
    """
    n = events.n_events
    off = events.offsets
    n_part = int(off[-1])
    P = events.particles
    t = flat_tree(events)
    evi, gm, leaf, apdg = t["evi"], t["gm"], t["leaf"], t["apdg"]
    e, pt, theta = t["e"], t["pt"], t["theta"]
    rvtx = np.hypot(P["vx"], P["vy"]).astype(np.float64)

    col = np.full(n_part, _OTHER, np.int64)
    for kind, c in _COL.items():
        col[apdg == kind] = c
    listed = col < _OTHER
    is_b = np.isin(apdg, (511, 521))
    transparent = ~listed & ~leaf & ~is_b
    # reco parent: first ancestor that is not a transparent resonance
    rp = gm.copy()
    for _ in range(64):
        up = (rp >= 0) & transparent[np.maximum(rp, 0)]
        if not up.any():
            break
        rp = np.where(up, gm[np.maximum(rp, 0)], rp)
    contrib = (rp >= 0) & ~transparent
    counts = np.bincount(rp[contrib] * _NCOL + col[contrib], minlength=n_part * _NCOL).reshape(n_part, _NCOL)

    match = np.zeros(n_part, bool)
    for kind, modes in _MODES.items():
        sel = apdg == kind
        if sel.any():
            c = counts[sel]
            match[sel] = np.any([np.all(c == _pattern(m), axis=1) for m in modes], axis=0)
    prior = np.zeros(n_part)
    ch_match = {}
    for bpdg, chans in _b_channels().items():
        sel = np.nonzero(apdg == bpdg)[0]
        if len(sel):
            c = counts[sel]
            hit = np.stack([np.all(c == pat, axis=1) for pat, _ in chans], 1)  # (nB, n_channels)
            pri = np.array([p for _, p in chans])
            prior[sel] = (hit * pri).max(1)
            ch_match[bpdg] = sel
    match |= prior > 0
    composite = listed & ~leaf | is_b

    # bottom-up: ok / log-efficiency of every particle from its reco children
    leaf_eff = _leaf_efficiency(apdg, pt, theta, e, rvtx, leaf)
    ok = np.where(leaf, leaf_eff > 0, match)
    logeff = np.where(leaf, np.log(np.maximum(leaf_eff, 1e-300)), 0.0)
    kids = np.nonzero(contrib)[0]
    parent = rp[kids]
    for _ in range(8):  # reco hierarchy depth <= 5 (B -> D* -> D -> K_S -> pi)
        bad = np.bincount(parent, weights=~ok[kids], minlength=n_part)
        le = np.bincount(parent, weights=np.where(ok[kids], logeff[kids], 0.0), minlength=n_part)
        new_ok = np.where(composite, match & (bad == 0), ok)
        new_le = np.where(composite, le, logeff)
        if np.array_equal(new_ok, ok) and np.allclose(new_le, logeff):
            break
        ok, logeff = new_ok, new_le
    eff = np.where(ok, np.exp(logeff), 0.0)
    eff = np.where(leaf, leaf_eff, eff)

    per_particle = {"reco_match": match.astype(np.float64), "reco_ok": ok.astype(np.float64), "reco_eff": eff, "tag_prior": prior}
    strength = prior * np.where(ok, eff, 0.0)
    per_event = {}
    for name, bpdg in (("tag_b0", 511), ("tag_bplus", 521)):
        v = np.zeros(n)
        sel = apdg == bpdg
        np.maximum.at(v, evi[sel], strength[sel])
        per_event[name] = v
    charm_ok = np.isin(apdg, _CHARM_KINDS) & ok
    per_event["n_reco_charm"] = np.bincount(evi, weights=charm_ok, minlength=n).astype(np.float64)
    return per_particle, per_event
