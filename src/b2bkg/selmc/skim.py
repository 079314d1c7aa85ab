"""FEI-hadronic-like skim emulator: detector response + tag-side B reconstruction.

The decision depends on the whole event and keeps the randomness of the real chain; nothing is
read from the generator's truth beyond the final-state particles a detector would see:

1. **Detector** (per final-state particle, random per event stream):
   tracks (e, mu, pi, K, p) inside 17-150 deg with a pT-dependent efficiency (plateau 95 %, lower
   for displaced production vertices), momentum smearing sigma(pT)/pT = 0.1 % pT (+) 0.3 %, a
   continuous hadron PID (log-likelihood ratio ln(L_K/L_pi) ~ N(+-3.5, 1.5) below 1 GeV, N(+-2.5,
   1.5) above: ~1-5 % of kaons look more pion-like than kaon-like and vice versa) and a lepton-ID
   matrix for the J/psi lists; photons inside the ECL (12.4-155.1 deg)
   above 20 MeV with 97 % efficiency and sigma_E/E = 0.066 %/E (+) 0.81 %/E^(1/4) (+) 1.34 % (Belle ECL);
   tracks leave an ECL deposit (MIP, hadronic shower fraction, or full energy for electrons);
   K_L and neutrons leave a partial cluster with 60 % probability; plus Poisson(1.5)
   beam-background clusters.
2. **Pre-cuts** (FEI hadronic skim): >= 3 clean tracks (pT > 0.1 GeV, 17-150 deg), >= 3 clean
   clusters (E > 0.1 GeV, 17-150 deg), visible energy in the CMS > 4 GeV, 2 < E_ECL < 7 GeV.
3. **Tag B** from the *reconstructed* lists with full combinatorics (wrong combinations
   included). As in the FEI, the charged-hadron lists are loose: every track enters the pion list
   (pion mass) and the kaon list (kaon mass); PID does not decide whether a combination exists but
   enters its likelihood (-2 ln kaonID or -2 ln pionID per daughter), so a given event yields
   nearly the same candidates repeat after repeat and the per-repeat randomness is what a
   detector really has (which tracks and photons are found, their smearing, PID and score spread).
   Lists: pi0 -> gamma gamma, K_S -> pi+ pi-, D0 (K pi, K pi pi0, K 3pi, K_S pi pi),
   D+ (K pi pi, K_S pi, K K pi), D_s+ (K K pi, K_S K), J/psi (e e, mu mu), D*+ (D0 pi+, D+ pi0),
   D*0 (D0 pi0, D0 gamma), D_s*+ (D_s gamma), then B channels D(*) n pi, D(*) D_s(*), J/psi K(*)
   (:data:`CHANNELS`) with the charge of a B+ (``fei_bplus``) or B0 (``fei_b0``).
   Intermediate lists keep their best candidates by mass pulls only (``n_best_*``). Each B
   candidate gets a signal-probability-like score: channel prior x exp(-chi2/2) from the
   intermediate mass pulls, Delta E (``de_sigma_gev``) and the daughters' PID (``pid_weight``),
   times a log-normal factor (the BDT's spread, ``score_spread``). The best
   candidate passing Mbc > 5.24 GeV, |Delta E| < 0.2 GeV and score > ``sigprob_cut`` keeps the event.

Randomness comes only from the event's skim key (``event_rng(seed, "smc.skim", i)``); repeats
(``oracle_repeats``) use further keys of the same stream, so they are independent re-runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from b2bkg.io.events import SmcEvents

from .counter_rng import derive_keys, normal, uniform
from .kinematics import Beams, boost

__all__ = ["SKIMS", "SkimConfig", "CHANNELS", "detector", "run_skims", "skim_outputs"]

SKIMS = ("fei_bplus", "fei_b0")
M_PI, M_K, M_E, M_MU, M_P = 0.13957, 0.49368, 0.000511, 0.10566, 0.93827
M_PI0, M_KS, M_D0, M_DP, M_DS, M_JPSI = 0.13498, 0.49761, 1.86484, 1.86966, 1.96835, 3.0969
DM_DSTP, DM_DSTP_PI0, DM_DST0, DM_DSTS = 0.14543, 0.14064, 0.14212, 0.14384
SPECIES = {11: 0, 13: 1, 211: 2, 321: 3, 2212: 4}  # true species -> row of the PID matrix
# PID confusion (rows true e, mu, pi, K, p; columns reconstructed e, mu, pi, K, p)
PID_MATRIX = np.array([
    [0.94, 0.00, 0.05, 0.01, 0.00],
    [0.00, 0.90, 0.09, 0.01, 0.00],
    [0.005, 0.02, 0.915, 0.05, 0.01],
    [0.00, 0.00, 0.10, 0.88, 0.02],
    [0.00, 0.00, 0.04, 0.08, 0.88],
])
HYP_MASS = np.array([M_E, M_MU, M_PI, M_K, M_P])
# B channels: (name, charm/charmonium list, bachelor list, prior)
CHANNELS = {
    "fei_bplus": [
        ("D0 pi", "D0", "pi", 1.0), ("D0 pi pi0", "D0", "pipi0", 0.5), ("D0 3pi", "D0", "pipipi", 0.4),
        ("D*0 pi", "Dst0", "pi", 1.0), ("D*0 pi pi0", "Dst0", "pipi0", 0.4), ("D*0 3pi", "Dst0", "pipipi", 0.3),
        ("D+ pi pi", "Dp", "pipi", 0.5), ("D*+ pi pi", "Dstp", "pipi", 0.5),
        ("D0 Ds", "D0", "Ds", 0.8), ("D*0 Ds", "Dst0", "Ds", 0.6), ("D0 Ds*", "D0", "Dsst", 0.6), ("D*0 Ds*", "Dst0", "Dsst", 0.5),
        ("D0 D0 K", "D0", "D0K", 0.4), ("J/psi K", "Jpsi", "K", 1.0), ("J/psi K pi", "Jpsi", "Kpi", 0.6), ("J/psi K_S pi", "Jpsi", "KSpi", 0.6),
    ],
    "fei_b0": [
        ("D- pi", "Dp", "pi", 1.0), ("D- pi pi0", "Dp", "pipi0", 0.5), ("D- 3pi", "Dp", "pipipi", 0.4),
        ("D*- pi", "Dstp", "pi", 1.0), ("D*- pi pi0", "Dstp", "pipi0", 0.4), ("D*- 3pi", "Dstp", "pipipi", 0.3),
        ("D0 pi pi", "D0", "pipi", 0.4), ("D0 pi pi pi0", "D0", "pipipi0", 0.3),
        ("D- Ds", "Dp", "Ds", 0.8), ("D*- Ds", "Dstp", "Ds", 0.6), ("D- Ds*", "Dp", "Dsst", 0.6), ("D*- Ds*", "Dstp", "Dsst", 0.5),
        ("D- D0 K", "Dp", "D0K", 0.4), ("J/psi K_S", "Jpsi", "KS", 1.0), ("J/psi K pi", "Jpsi", "Kpi", 0.6),
    ],
}


@dataclass(frozen=True)
class SkimConfig:
    """Constants of the detector emulation and the skim (GeV, degrees)."""

    theta_min_deg: float = 17.0
    theta_max_deg: float = 150.0
    track_eff: float = 0.95
    photon_eff: float = 0.97
    ecl_noise_term: float = 0.00066
    photon_min_gev: float = 0.02
    n_background_clusters: float = 1.5
    min_clean_tracks: int = 3
    min_clean_clusters: int = 3
    min_e_visible_gev: float = 4.0
    e_ecl_range_gev: tuple = (2.0, 7.0)
    mbc_min_gev: float = 5.24
    de_max_gev: float = 0.2
    de_sigma_gev: float = 0.03
    sigprob_cut: float = 0.001
    d_window_gev: float = 0.05
    pid_sep_low: float = 3.5
    pid_sep_high: float = 2.5
    pid_sigma: float = 1.5
    pid_floor: float = 0.01
    pid_weight: float = 1.0
    prior_scale: tuple = (("fei_bplus", 1.2), ("fei_b0", 0.2))
    n_best_charm: int = 10
    n_best_bachelor: int = 20
    score_spread: float = 1.0
    max_tracks: int = 40
    max_photons: int = 40
    beams: Beams = field(default_factory=Beams)


_P_TRK, _P_PID, _P_SM, _P_GAM, _P_ECL, _P_BKG, _P_SCORE = 101, 102, 103, 104, 105, 106, 107


def detector(events: SmcEvents, keys: np.ndarray, cfg: SkimConfig) -> dict:
    """Reconstructed tracks and clusters of each event.

    Args:
        events: generator-level events (n events).
        keys: skim key per event, shape (n,), uint64.

    Returns:
        dict with ``tracks`` (ev, p4 lab with the PID-hypothesis mass, charge, hyp 0..4, local
        index), ``photons`` (ev, p4, local index; neutral clusters), per-event ``n_tracks``,
        ``n_clusters``, ``e_visible`` (CMS, GeV), ``e_ecl`` (GeV).
    """
    n = events.n_events
    P = events.particles
    off = events.offsets
    evi = np.repeat(np.arange(n), np.diff(off))
    local = np.arange(len(evi)) - off[evi]
    mother = P["mother"].astype(np.int64)
    has_dau = np.zeros(len(evi), bool)
    m = mother >= 0
    has_dau[off[evi[m]] + mother[m]] = True
    pdg = np.abs(P["pdg"].astype(np.int64))
    leaf = ~has_dau
    p3 = np.stack([P["px"], P["py"], P["pz"]], 1).astype(np.float64)
    e = P["energy"].astype(np.float64)
    pmag = np.linalg.norm(p3, axis=1)
    theta = np.degrees(np.arccos(np.clip(p3[:, 2] / np.maximum(pmag, 1e-12), -1, 1)))
    pt = np.hypot(p3[:, 0], p3[:, 1])
    rvtx = np.hypot(P["vx"], P["vy"]).astype(np.float64)
    k = keys[evi]
    in_cdc = (theta > cfg.theta_min_deg) & (theta < cfg.theta_max_deg)
    charged = leaf & np.isin(pdg, list(SPECIES))
    eff = cfg.track_eff * (1 - np.exp(-np.maximum(pt - 0.05, 0) / 0.05)) * np.where(rvtx > 1.0, np.clip(1.0 - rvtx / 60.0, 0.0, 1.0) * 0.85, 1.0)
    found = charged & in_cdc & (pt > 0.05) & (uniform(k, local, _P_TRK) < eff)
    # momentum smearing (on pT, angles kept)
    sig = np.hypot(0.0011 * pt, 0.003)
    scale = 1.0 + sig * normal(k, local, _P_SM)
    species = np.zeros(len(evi), np.int64)
    for code, row in SPECIES.items():
        species[pdg == code] = row
    cum = np.cumsum(PID_MATRIX, 1)
    hyp = np.minimum((uniform(k, local, _P_PID)[:, None] > cum[species]).sum(1), 4)
    charge = np.sign(P["pdg"]).astype(np.int64) * np.where(np.isin(pdg, (11, 13)), -1, 1)
    t = np.nonzero(found)[0]
    tp3 = p3[t] * scale[t, None]
    tm = HYP_MASS[hyp[t]]
    # hadron PID: log-likelihood ratio ln(L_K / L_pi) ~ N(+-mu(p), sigma) (dE/dx below 1 GeV, TOP/ARICH above)
    mu_sep = np.where(pmag < 1.0, cfg.pid_sep_low, cfg.pid_sep_high)
    sgn = np.where(pdg == 321, 1.0, np.where(pdg == 2212, 0.3, -1.0))
    llr = sgn * mu_sep + cfg.pid_sigma * normal(k, local, _P_PID, 2)
    kaon_id = 1.0 / (1.0 + np.exp(-np.clip(llr, -30, 30)))
    tracks = {
        "ev": evi[t], "p3": tp3, "p4": np.concatenate([tp3, np.sqrt((tp3**2).sum(1) + tm**2)[:, None]], 1),
        "q": charge[t], "hyp": hyp[t], "pt": pt[t] * scale[t], "theta": theta[t], "kaon_id": kaon_id[t],
    }
    # ECL clusters: photons, track deposits, K_L / n
    in_ecl = (theta > 12.4) & (theta < 155.1)
    u_ecl = uniform(k, local, _P_ECL)
    u_ecl2 = uniform(k, local, _P_ECL, 1)
    dep = np.zeros(len(evi))
    is_g = leaf & (pdg == 22) & in_ecl & (e > cfg.photon_min_gev) & (uniform(k, local, _P_GAM) < cfg.photon_eff)
    rel = np.sqrt((cfg.ecl_noise_term / np.maximum(e, 1e-3)) ** 2 + (0.0081 / np.maximum(e, 1e-3) ** 0.25) ** 2 + 0.0134**2)
    eg = e * (1.0 + rel * normal(k, local, _P_GAM))
    dep = np.where(is_g, np.maximum(eg, 0.0), dep)
    had = found & np.isin(pdg, (211, 321, 2212))
    dep = np.where(had, np.where(u_ecl < 0.55, 0.17 + 0.03 * u_ecl2, u_ecl2 * 0.8 * e), dep)
    dep = np.where(found & (pdg == 13), 0.19 + 0.02 * u_ecl2, dep)
    dep = np.where(found & (pdg == 11), 0.93 * e, dep)
    neutral_h = leaf & np.isin(pdg, (130, 2112)) & in_ecl & (u_ecl < 0.6)
    dep = np.where(neutral_h, (0.2 + 0.6 * u_ecl2) * np.maximum(e - np.where(pdg == 2112, 0.9396, 0.0), 0.05), dep)
    has_cluster = (dep > 0) & in_ecl & (is_g | found | neutral_h)
    clean_cl = has_cluster & (dep > 0.1) & in_cdc
    # beam-background clusters (Poisson, isotropic, soft)
    lam = cfg.n_background_clusters
    u_b = uniform(keys, 0, _P_BKG)
    nb = np.zeros(n, np.int64)
    pk, ck = np.exp(-lam), np.exp(-lam)
    for j in range(1, 12):
        nb += (u_b > ck).astype(np.int64)
        pk = pk * lam / j
        ck = ck + pk
    bev = np.repeat(np.arange(n), nb)
    bj = np.arange(len(bev)) - np.repeat(np.cumsum(nb) - nb, nb)
    be = 0.02 + 0.04 * -np.log(uniform(keys[bev], 1000 + bj, _P_BKG, 1))
    bct = np.cos(np.radians(12.4)) - uniform(keys[bev], 1000 + bj, _P_BKG, 2) * (np.cos(np.radians(12.4)) - np.cos(np.radians(155.1)))
    bphi = 2 * np.pi * uniform(keys[bev], 1000 + bj, _P_BKG, 3)
    bst = np.sqrt(1 - bct**2)
    bp3 = be[:, None] * np.stack([bst * np.cos(bphi), bst * np.sin(bphi), bct], 1)
    btheta = np.degrees(np.arccos(bct))
    n_tracks = np.bincount(evi[t], weights=(tracks["pt"] > 0.1) & (theta[t] > cfg.theta_min_deg) & (theta[t] < cfg.theta_max_deg), minlength=n)
    b_clean = (be > 0.1) & (btheta > cfg.theta_min_deg) & (btheta < cfg.theta_max_deg)
    n_clusters = np.bincount(evi, weights=clean_cl, minlength=n) + np.bincount(bev, weights=b_clean, minlength=n)
    e_ecl = np.bincount(evi, weights=np.where(has_cluster, dep, 0.0), minlength=n) + np.bincount(bev, weights=be, minlength=n)
    # photon list: real photons, K_L/n clusters and background clusters (neutral clusters)
    neu = np.nonzero(is_g | neutral_h)[0]
    dirs = p3[neu] / np.maximum(pmag[neu], 1e-12)[:, None]
    gp3 = np.concatenate([dirs * dep[neu, None], bp3])
    gev = np.concatenate([evi[neu], bev])
    o = np.argsort(gev, kind="stable")
    gp3, gev = gp3[o], gev[o]
    photons = {"ev": gev, "p4": np.concatenate([gp3, np.linalg.norm(gp3, axis=1)[:, None]], 1)}
    # visible energy in the CMS: tracks (pion mass) + neutral clusters
    beta = cfg.beams.boost_to_cms()
    tpi = np.concatenate([tp3, np.sqrt((tp3**2).sum(1) + M_PI**2)[:, None]], 1)
    ecms_t = boost(tpi, beta[None, :])[:, 3]
    ecms_g = boost(photons["p4"], beta[None, :])[:, 3]
    e_vis = np.bincount(evi[t], weights=ecms_t, minlength=n) + np.bincount(gev, weights=ecms_g * (photons["p4"][:, 3] > 0.05), minlength=n)
    _index_within(tracks, n, cfg.max_tracks)
    _index_within(photons, n, cfg.max_photons)
    return {
        "tracks": tracks, "photons": photons, "n_tracks": n_tracks, "n_clusters": n_clusters,
        "e_visible": e_vis, "e_ecl": e_ecl, "n_events": n,
    }


def _index_within(lst: dict, n: int, cap: int) -> None:
    """Add the index of each object within its event and drop those beyond ``cap`` (<= 63)."""
    ev = lst["ev"]
    cnt = np.bincount(ev, minlength=n)
    j = np.arange(len(ev)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    keep = j < min(cap, 63)
    for kk in list(lst):
        lst[kk] = lst[kk][keep]
    lst["bit"] = np.left_shift(np.uint64(1), j[keep].astype(np.uint64))


# ---------------------------------------------------------------- candidate lists
def _cand(ev, p4, q, mt, mg, chi2, n, pid=None):
    pid = np.zeros(len(ev)) if pid is None else pid
    return {"ev": ev, "p4": p4, "q": q, "mt": mt, "mg": mg, "chi2": chi2, "pid": pid, "last": np.arange(len(ev)), "n": n}


def _combine(A, B, same=False, after=False):
    """All pairs (a, b) of candidates of the same event that share no track or cluster."""
    n = A["n"]
    nb = np.bincount(B["ev"], minlength=n)
    startb = np.cumsum(nb) - nb
    reps = nb[A["ev"]]
    ia = np.repeat(np.arange(len(A["ev"])), reps)
    offs = np.arange(len(ia)) - np.repeat(np.cumsum(reps) - reps, reps)
    ib = startb[A["ev"][ia]] + offs
    keep = ((A["mt"][ia] & B["mt"][ib]) == 0) & ((A["mg"][ia] & B["mg"][ib]) == 0)
    if same:
        keep &= ia < ib
    if after:
        keep &= ib > A["last"][ia]
    ia, ib = ia[keep], ib[keep]
    c = _cand(A["ev"][ia], A["p4"][ia] + B["p4"][ib], A["q"][ia] + B["q"][ib], A["mt"][ia] | B["mt"][ib],
              A["mg"][ia] | B["mg"][ib], A["chi2"][ia] + B["chi2"][ib], n, A["pid"][ia] + B["pid"][ib])
    c["last"] = ib
    c["ia"] = ia
    return c


def _sel(c, keep):
    out = {k: (v[keep] if isinstance(v, np.ndarray) else v) for k, v in c.items()}
    return out


def _top_n(c, n_best: int):
    """Keep the ``n_best`` candidates of lowest chi2 per event (the FEI's best-candidate cut)."""
    if len(c["ev"]) == 0:
        return c
    o = np.lexsort((c["chi2"], c["ev"]))
    ev = c["ev"][o]
    start = np.r_[True, ev[1:] != ev[:-1]]
    first = np.maximum.accumulate(np.where(start, np.arange(len(ev)), 0))
    keep = np.sort(o[(np.arange(len(ev)) - first) < n_best])
    out = _sel(c, keep)
    if "last" in c:
        out["last"] = c["last"][keep]
    return out


def _mass(p4):
    return np.sqrt(np.maximum(p4[:, 3] ** 2 - (p4[:, :3] ** 2).sum(1), 0.0))


def _window(c, m0, half, sigma, charge=None):
    m = _mass(c["p4"])
    keep = np.abs(m - m0) < half
    if charge is not None:
        keep &= np.isin(c["q"], charge)
    out = _sel(c, keep)
    out["chi2"] = out["chi2"] + ((m[keep] - m0) / sigma) ** 2
    return out


def _cat(*lists):
    n = lists[0]["n"]
    ev = np.concatenate([c["ev"] for c in lists])
    o = np.argsort(ev, kind="stable")
    out = {k: np.concatenate([c[k] for c in lists])[o] for k in ("ev", "p4", "q", "mt", "mg", "chi2", "pid")}
    out["last"] = np.arange(len(o))
    out["n"] = n
    return out


def _build_lists(det: dict, cfg: SkimConfig) -> dict:
    n = det["n_events"]
    w = cfg.d_window_gev
    tr, ph = det["tracks"], det["photons"]
    z64 = lambda k: np.zeros(k, np.uint64)  # noqa: E731
    nt = len(tr["ev"])
    hyp = tr["hyp"]

    def with_mass(m):
        return np.concatenate([tr["p3"], np.sqrt((tr["p3"] ** 2).sum(1) + m**2)[:, None]], 1)

    # loose PID as in the FEI (pionID, kaonID > 0.01 pre-cuts): every hadron track enters the pion list
    # (pion mass) and the kaon list (kaon mass); its PID enters each candidate's -2 ln L
    kid = np.clip(tr["kaon_id"], cfg.pid_floor, 1 - cfg.pid_floor)
    trk = _cand(tr["ev"], tr["p4"], tr["q"], tr["bit"], z64(nt), np.zeros(nt), n)
    pi = _cand(tr["ev"], with_mass(M_PI), tr["q"], tr["bit"], z64(nt), np.zeros(nt), n, -2 * np.log(1 - kid))
    K = _cand(tr["ev"], with_mass(M_K), tr["q"], tr["bit"], z64(nt), np.zeros(nt), n, -2 * np.log(kid))
    lep = _sel(trk, hyp <= 1)
    g = _cand(ph["ev"], ph["p4"], np.zeros(len(ph["ev"]), np.int64), z64(len(ph["ev"])), ph["bit"], np.zeros(len(ph["ev"])), n)
    g = _sel(g, g["p4"][:, 3] > 0.03)
    pi0 = _window(_combine(g, g, same=True), M_PI0, 0.013, 0.006)
    pi0["last"] = np.arange(len(pi0["ev"]))
    ks = _window(_combine(pi, pi, same=True), M_KS, 0.012, 0.004, charge=[0])
    L = {"pi": pi, "K": K, "KS": ks, "pi0": pi0, "g": g}
    pipi = _combine(pi, pi, same=True)  # "last" = index of the second pion: triplets in index order
    L["pipi"] = pipi
    ppp = _combine(pipi, pi, after=True)
    L["pipipi"] = _sel(ppp, np.abs(ppp["q"]) == 1)
    L["pipi0"] = _combine(pi, pi0)
    L["pipipi0"] = _combine(_sel(pipi, pipi["q"] == 0), pi0)
    Kpi = _combine(K, pi)
    m_kpi = _mass(Kpi["p4"])
    L["Kpi"] = _sel(Kpi, m_kpi < 1.4)
    L["KSpi"] = _combine(ks, pi)

    def neutral_below(c, m_c, m_max):
        """Neutral sub-combinations light enough to end inside a D window (m(A+B) >= m(A) + m(B):
        the same D candidates as without the cut, built faster)."""
        return _sel(c, (c["q"] == 0) & (m_c < m_max))

    m_pipi = _mass(pipi["p4"])
    # D mesons
    d0 = [
        _window(Kpi, M_D0, w, 0.006, charge=[0]),
        _window(_combine(neutral_below(Kpi, m_kpi, M_D0 + w - M_PI0), pi0), M_D0, w, 0.012),
        _window(_combine(neutral_below(Kpi, m_kpi, M_D0 + w - 2 * M_PI), neutral_below(pipi, m_pipi, M_D0 + w - M_K - M_PI)),
                M_D0, w, 0.006, charge=[0]),
        _window(_combine(ks, neutral_below(pipi, m_pipi, M_D0 + w - M_KS)), M_D0, w, 0.007),
        _window(_combine(ks, pi0), M_D0, w, 0.015),
    ]
    D0 = _cat(*d0)
    Kpipi = _combine(neutral_below(Kpi, m_kpi, M_DP + w - M_PI), pi)
    m_kpipi = _mass(Kpipi["p4"])
    KK = _combine(K, K, same=True)
    KKpi = _combine(neutral_below(KK, _mass(KK["p4"]), M_DS + w - M_PI), pi)
    kspi = _combine(ks, pi)
    Dp = _cat(
        _window(Kpipi, M_DP, w, 0.006, charge=[-1, 1]),
        _window(kspi, M_DP, w, 0.007, charge=[-1, 1]),
        _window(KKpi, M_DP, w, 0.006, charge=[-1, 1]),
        _window(_combine(_sel(Kpipi, m_kpipi < M_DP + w - M_PI0), pi0), M_DP, w, 0.012, charge=[-1, 1]),
        _window(_combine(_sel(kspi, _mass(kspi["p4"]) < M_DP + w - M_PI0), pi0), M_DP, w, 0.012, charge=[-1, 1]),
    )
    Ds = _cat(
        _window(KKpi, M_DS, w, 0.006, charge=[-1, 1]),
        _window(_combine(ks, K), M_DS, w, 0.007, charge=[-1, 1]),
    )
    ll = _combine(lep, lep, same=True)
    Jpsi = _sel(ll, (ll["q"] == 0) & (_mass(ll["p4"]) > 2.95) & (_mass(ll["p4"]) < 3.15))
    Jpsi["chi2"] = Jpsi["chi2"] + ((_mass(Jpsi["p4"]) - M_JPSI) / 0.015) ** 2
    mD0 = _mass(D0["p4"])
    mDp = _mass(Dp["p4"])
    mDs = _mass(Ds["p4"])

    def star_list(D, mD, soft, dm0, half, sigma, charge):
        c = _combine(D, soft)
        ia = c["ia"]
        dm = _mass(c["p4"]) - mD[ia]
        k2 = (np.abs(dm - dm0) < half) & np.isin(c["q"], charge)
        out = _sel(c, k2)
        out["chi2"] = out["chi2"] + ((dm[k2] - dm0) / sigma) ** 2
        return out

    Dstp = _cat(
        star_list(D0, mD0, pi, DM_DSTP, 0.006, 0.0008, [-1, 1]),
        star_list(Dp, mDp, pi0, DM_DSTP_PI0, 0.008, 0.0015, [-1, 1]),
    )
    Dst0 = _cat(
        star_list(D0, mD0, pi0, DM_DST0, 0.008, 0.0015, [0]),
        star_list(D0, mD0, g, DM_DST0, 0.025, 0.012, [0]),
    )
    Dsst = star_list(Ds, mDs, g, DM_DSTS, 0.025, 0.012, [-1, 1])
    nd, nb = cfg.n_best_charm, cfg.n_best_bachelor
    L.update({"D0": _top_n(D0, nd), "Dp": _top_n(Dp, nd), "Ds": _top_n(Ds, nd), "Jpsi": _top_n(Jpsi, nd),
              "Dstp": _top_n(Dstp, nd), "Dst0": _top_n(Dst0, nd), "Dsst": _top_n(Dsst, nd)})
    L["D0K"] = _top_n(_combine(L["D0"], K), nd)
    for name in ("pipi", "pipipi", "pipi0", "pipipi0", "Kpi", "KSpi"):
        L[name] = _top_n(L[name], nb)
    return L


def run_skims(events: SmcEvents, keys: np.ndarray, cfg: SkimConfig | None = None) -> dict[str, np.ndarray]:
    """Detector + both skims for one stream of keys.

    Args:
        events: n generator-level events.
        keys: skim key per event, shape (n,), uint64.

    Returns:
        per-event arrays: ``n_tracks``, ``n_clusters``, ``e_visible``, ``e_ecl`` and, per skim,
        ``mbc_<skim>``, ``de_<skim>``, ``tag_p_<skim>`` (GeV, CMS; NaN without candidate),
        ``passed_<skim>`` (bool).
    """
    cfg = cfg or SkimConfig()
    keys = np.asarray(keys, np.uint64)
    det = detector(events, keys, cfg)
    n = det["n_events"]
    pre = (
        (det["n_tracks"] >= cfg.min_clean_tracks) & (det["n_clusters"] >= cfg.min_clean_clusters)
        & (det["e_visible"] > cfg.min_e_visible_gev)
        & (det["e_ecl"] > cfg.e_ecl_range_gev[0]) & (det["e_ecl"] < cfg.e_ecl_range_gev[1])
    )
    out = {"n_tracks": det["n_tracks"], "n_clusters": det["n_clusters"], "e_visible": det["e_visible"], "e_ecl": det["e_ecl"]}
    # reconstruct only in events passing the pre-cuts
    sub = np.nonzero(pre)[0]
    det_sub = _subset(det, sub)
    L = _build_lists(det_sub, cfg)
    beta = cfg.beams.boost_to_cms()
    ebeam = 0.5 * cfg.beams.sqrt_s_nominal_gev
    for skim in SKIMS:
        mbc = np.full(n, np.nan)
        de = np.full(n, np.nan)
        tp = np.full(n, np.nan)
        passed = np.zeros(n, bool)
        best_score = np.full(n, -1.0)
        best_any = np.full(n, -1.0)
        charge = [-1, 1] if skim == "fei_bplus" else [0]
        scale = dict(cfg.prior_scale).get(skim, 1.0)
        for ci, (_name, cl, bl, prior) in enumerate(CHANNELS[skim]):
            B = _combine(L[cl], L[bl])
            B = _sel(B, np.isin(B["q"], charge))
            if len(B["ev"]) == 0:
                continue
            pc = boost(B["p4"], beta[None, :])
            pstar = np.linalg.norm(pc[:, :3], axis=1)
            m_bc = np.sqrt(np.maximum(ebeam**2 - pstar**2, 0.0))
            d_e = pc[:, 3] - ebeam
            loose = (m_bc > 5.2) & (np.abs(d_e) < 0.3)
            if not loose.any():
                continue
            ev = sub[B["ev"][loose]]
            chi2 = B["chi2"][loose] + (d_e[loose] / cfg.de_sigma_gev) ** 2 + cfg.pid_weight * B["pid"][loose]
            noise = np.exp(cfg.score_spread * normal(keys[ev], B["mt"][loose], B["mg"][loose], _P_SCORE, ci))
            score = np.clip(scale * prior * np.exp(-0.5 * np.minimum(chi2, 200.0)) * noise, 0.0, 1.0)
            ok = (m_bc[loose] > cfg.mbc_min_gev) & (np.abs(d_e[loose]) < cfg.de_max_gev) & (score > cfg.sigprob_cut)
            # rank: passing candidates first, then by score
            rank = score + 2.0 * ok
            order = np.lexsort((-rank, ev))
            ev_o = ev[order]
            firsts = np.r_[True, ev_o[1:] != ev_o[:-1]]
            top = order[firsts]
            evt = ev[top]
            better = rank[top] > best_any[evt]
            e2 = evt[better]
            t2 = top[better]
            best_any[e2] = rank[t2]
            mbc[e2] = m_bc[loose][t2]
            de[e2] = d_e[loose][t2]
            tp[e2] = pstar[loose][t2]
            passed[e2] = ok[t2]
            best_score[e2] = score[t2]
        out[f"mbc_{skim}"] = mbc
        out[f"de_{skim}"] = de
        out[f"tag_p_{skim}"] = tp
        out[f"passed_{skim}"] = passed & pre
    return out


def _subset(det: dict, sub: np.ndarray) -> dict:
    n = det["n_events"]
    new = np.full(n, -1, np.int64)
    new[sub] = np.arange(len(sub))
    out = {"n_events": len(sub)}
    for name in ("tracks", "photons"):
        lst = det[name]
        keep = new[lst["ev"]] >= 0
        d = {k: v[keep] for k, v in lst.items()}
        d["ev"] = new[d["ev"]]
        out[name] = d
    return out


def skim_outputs(events: SmcEvents, skim_keys: np.ndarray, cfg: SkimConfig | None = None) -> dict[str, np.ndarray]:
    """Per-event skim columns for the file: run 0 from ``skim_keys[:, 0]``; with more key columns
    (``oracle_repeats`` K), also ``pass_prob_<skim>`` = fraction of the K further runs that passed.

    Args:
        skim_keys: shape (n,) or (n, 1 + K), uint64.
    """
    skim_keys = np.asarray(skim_keys, np.uint64)
    if skim_keys.ndim == 1:
        skim_keys = skim_keys[:, None]
    res = run_skims(events, skim_keys[:, 0], cfg)
    out = {k: v for k, v in res.items() if k != "e_ecl"}
    K = skim_keys.shape[1] - 1
    if K > 0:
        acc = {s: np.zeros(events.n_events) for s in SKIMS}
        for r in range(K):
            rr = run_skims(events, skim_keys[:, 1 + r], cfg)
            for s in SKIMS:
                acc[s] += rr[f"passed_{s}"]
        for s in SKIMS:
            out[f"pass_prob_{s}"] = (acc[s] / K).astype(np.float32)
    return out


def repeat_keys(keys: np.ndarray, repeat: int) -> np.ndarray:
    """Further independent keys derived from a skim key (repeat >= 1)."""
    return derive_keys(np.asarray(keys, np.uint64), 0x5EED, repeat)
