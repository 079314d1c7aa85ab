"""Vectorized relativistic kinematics for the selective-MC generator.

All four-vectors are float64 arrays ``(..., 4)`` ordered (px, py, pz, E) in GeV.

* :func:`phase_space`: n-body phase space in the parent rest frame, the GENBOD algorithm
  (F. James, CERN 68-15; ROOT's TGenPhaseSpace): intermediate invariant masses from sorted
  uniforms, weight = product of the two-body break-up momenta, unweighted by acceptance-rejection
  against the GENBOD upper bound, then successive two-body decays with isotropic directions. One
  call handles many parents with the same number of daughters (rows); rejected rows are redrawn
  with a new attempt counter, so every row's result depends only on its own random stream.
* :func:`string_momenta`: the longitudinal string model used for the continuum: hadrons ordered
  along the string get ordered rapidities y_i = Y y'_i + s (y'_i sorted uniforms in (-1, 1)),
  transverse momenta from Gaussian kicks shared by neighbours (p_T,i = t_i - t_(i-1), so
  sum p_T = 0 exactly), and (Y, s) solved so that the system has exactly the string's mass and zero
  longitudinal momentum.
* :class:`Beams`: SuperKEKB: 7 GeV e- on 4 GeV e+ (scaled by a common factor so that the nominal
  sqrt(s) is the Y(4S) mass), crossing angle 83 mrad (each beam tilted by 41.5 mrad from the
  solenoid axis z in the x-z plane), beam-energy spreads 4.4 MeV (HER) / 3.2 MeV (LER), i.e. ~5 MeV
  on sqrt(s), and a Gaussian luminous region (10 um, 0.2 um, 350 um).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .counter_rng import normal, uniform

__all__ = [
    "C_CM_PER_NS", "boost", "two_body_momentum", "isotropic", "rotate_z_to", "phase_space",
    "string_momenta", "Beams", "mass_of",
]

C_CM_PER_NS = 29.9792458


def mass_of(p4: np.ndarray) -> np.ndarray:
    """Invariant mass (GeV) of four-vectors ``(..., 4)`` (0 where m^2 < 0)."""
    m2 = p4[..., 3] ** 2 - (p4[..., :3] ** 2).sum(-1)
    return np.sqrt(np.maximum(m2, 0.0))


def boost(p4: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Boost four-vectors ``p4`` (..., 4) by velocity ``beta`` (..., 3) (frame moving with -beta)."""
    b2 = (beta**2).sum(-1)
    gamma = 1.0 / np.sqrt(np.maximum(1.0 - b2, 1e-300))
    bp = (beta * p4[..., :3]).sum(-1)
    g2 = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    out = np.empty(np.broadcast_shapes(p4.shape, beta.shape[:-1] + (4,)))
    out[..., :3] = p4[..., :3] + (g2 * bp + gamma * p4[..., 3])[..., None] * beta
    out[..., 3] = gamma * (p4[..., 3] + bp)
    return out


def two_body_momentum(M, m1, m2) -> np.ndarray:
    """Break-up momentum (GeV) of M -> m1 m2 (0 below threshold)."""
    M = np.asarray(M, np.float64)
    t = (M**2 - (m1 + m2) ** 2) * (M**2 - (m1 - m2) ** 2)
    return np.sqrt(np.maximum(t, 0.0)) / (2.0 * np.maximum(M, 1e-300))


def isotropic(u_cos: np.ndarray, u_phi: np.ndarray) -> np.ndarray:
    """Unit vectors (..., 3) uniform on the sphere from two uniforms."""
    c = 2.0 * u_cos - 1.0
    s = np.sqrt(np.maximum(1.0 - c * c, 0.0))
    phi = 2.0 * np.pi * u_phi
    return np.stack([s * np.cos(phi), s * np.sin(phi), c], -1)


def rotate_z_to(v: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Rotate vectors ``v`` (..., 3) given in a frame whose z is ``axis`` (..., 3, unit) into the lab."""
    ax = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    ct = ax[..., 2]
    st = np.sqrt(np.maximum(1.0 - ct * ct, 0.0))
    phi = np.arctan2(ax[..., 1], ax[..., 0])
    cp, sp = np.cos(phi), np.sin(phi)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    # R = Rz(phi) Ry(theta)
    x1 = ct * x + st * z
    z1 = -st * x + ct * z
    return np.stack([cp * x1 - sp * y, sp * x1 + cp * y, z1], -1)


def _pdk(a, b, c):
    return two_body_momentum(a, b, c)


def phase_space(key, owner, salt, M: np.ndarray, masses: np.ndarray, max_attempts: int = 60):
    """Unweighted n-body phase-space decays in the parent rest frame (GENBOD + acceptance-rejection).

    Args:
        key: event key per row, shape (N,), uint64.
        owner: counter of the parent within its event, shape (N,).
        salt: extra counter per row (e.g. channel attempt), shape (N,).
        M: parent masses (GeV), shape (N,).
        masses: daughter masses (GeV), shape (N, n), n >= 2, with sum < M.

    Returns:
        Daughter four-momenta (N, n, 4) in the parent rest frame (GeV). Rows still rejected after
        ``max_attempts`` keep their last (weighted) configuration.
    """
    M = np.asarray(M, np.float64)
    masses = np.asarray(masses, np.float64)
    N, n = masses.shape
    out = np.zeros((N, n, 4))
    todo = np.arange(N)
    # GENBOD weight bound per row
    T = M - masses.sum(1)
    emmax = T + masses[:, 0]
    emmin = np.zeros(N)
    wmax = np.ones(N)
    for i in range(1, n):
        emmin = emmin + masses[:, i - 1]
        emmax = emmax + masses[:, i]
        wmax = wmax * _pdk(emmax, emmin, masses[:, i])
    for attempt in range(max_attempts):
        if len(todo) == 0:
            break
        k, o, s = key[todo], owner[todo], salt[todo]
        m = masses[todo]
        Mt = M[todo]
        Tt = T[todo]
        if n > 2:
            r = np.sort(uniform(k[:, None], o[:, None], s[:, None], attempt, np.arange(n - 2)[None, :] + 100), 1)
            r = np.concatenate([np.zeros((len(todo), 1)), r, np.ones((len(todo), 1))], 1)
        else:
            r = np.stack([np.zeros(len(todo)), np.ones(len(todo))], 1)
        inv = np.cumsum(m, 1) + r * Tt[:, None]  # (n_todo, n) invariant masses M_0..M_(n-1)
        inv[:, -1] = Mt
        pk = _pdk(inv[:, 1:], inv[:, :-1], m[:, 1:])  # (n_todo, n-1)
        w = pk.prod(1)
        acc = uniform(k, o, s, attempt, 7) * wmax[todo] <= w
        if attempt == max_attempts - 1:
            acc[:] = True
        sel = todo[acc]
        if len(sel):
            ka, oa, sa = k[acc], o[acc], s[acc]
            ma, inva, pka = m[acc], inv[acc], pk[acc]
            na = len(sel)
            p = np.zeros((na, n, 4))
            d = isotropic(uniform(ka, oa, sa, attempt, 200), uniform(ka, oa, sa, attempt, 300))
            p[:, 1, :3] = pka[:, 0, None] * d
            p[:, 0, :3] = -p[:, 1, :3]
            p[:, 0, 3] = np.sqrt(pka[:, 0] ** 2 + ma[:, 0] ** 2)
            p[:, 1, 3] = np.sqrt(pka[:, 0] ** 2 + ma[:, 1] ** 2)
            for i in range(2, n):
                d = isotropic(uniform(ka, oa, sa, attempt, 200 + i), uniform(ka, oa, sa, attempt, 300 + i))
                q = pka[:, i - 1]
                # system of the first i particles recoils against particle i in the frame of inv[i]
                esys = np.sqrt(q**2 + inva[:, i - 1] ** 2)
                beta = (-q / esys)[:, None] * d
                p[:, :i] = boost(p[:, :i], beta[:, None, :])
                p[:, i, :3] = q[:, None] * d
                p[:, i, 3] = np.sqrt(q**2 + ma[:, i] ** 2)
            out[sel] = p
        todo = todo[~acc]
    return out


def string_momenta(key, owner, masses: np.ndarray, n: np.ndarray, W: np.ndarray, sigma_kick_gev: float = 0.30):
    """Hadron momenta of strings of mass ``W`` stretched along +z (hadron 0 at the +z end).

    Args:
        key, owner: per-string event key (uint64) and counter, shape (S,).
        masses: hadron masses, shape (S, K) (GeV), valid in the first ``n`` columns.
        n: number of hadrons per string, (S,), >= 1.
        W: string masses (GeV), (S,).

    Returns:
        (p4 (S, K, 4) in the string rest frame, ok (S,) bool: False where sum of m_T exceeds W).
    """
    S, K = masses.shape
    col = np.arange(K)[None, :]
    valid = col < n[:, None]
    kick = np.stack([normal(key[:, None], owner[:, None], 40, col), normal(key[:, None], owner[:, None], 41, col)], -1)
    kick = kick * sigma_kick_gev * (col < (n[:, None] - 1))[..., None]
    prev = np.concatenate([np.zeros((S, 1, 2)), kick[:, :-1]], 1)
    pt = np.where(valid[..., None], kick - prev, 0.0)
    mt = np.where(valid, np.sqrt(np.where(valid, masses, 0.0) ** 2 + (pt**2).sum(-1)), 0.0)
    u = uniform(key[:, None], owner[:, None], 42, col)
    ys = np.sort(np.where(valid, 2.0 * u - 1.0, -np.inf), 1)[:, ::-1]  # descending, pads at the end
    ys = np.where(valid, ys, 0.0)
    # stretch so that the end hadrons sit at +-1 (the string ends); middle ones keep their spacing
    top = ys[:, 0]
    bot = np.take_along_axis(ys, np.maximum(n - 1, 0)[:, None], 1)[:, 0]
    span = np.where(top > bot, top - bot, 1.0)
    ys = np.where(valid, -1.0 + 2.0 * (ys - bot[:, None]) / span[:, None], 0.0)
    single = n == 1
    ok = (mt.sum(1) < W) | single

    def inv_mass(Y):
        a = (mt * np.sinh(Y[:, None] * ys)).sum(1)
        b = (mt * np.cosh(Y[:, None] * ys)).sum(1)
        return np.sqrt(np.maximum(b * b - a * a, 0.0)), a, b

    lo = np.zeros(S)
    hi = np.full(S, 30.0)
    for _ in range(70):
        mid = 0.5 * (lo + hi)
        m, _, _ = inv_mass(mid)
        big = m > W
        hi = np.where(big, mid, hi)
        lo = np.where(big, lo, mid)
    Y = 0.5 * (lo + hi)
    mY, a, b = inv_mass(Y)
    ok &= np.abs(mY - W) < 1e-6 * np.maximum(W, 1.0)
    shift = np.arctanh(np.clip(-a / np.maximum(b, 1e-300), -1 + 1e-15, 1 - 1e-15))
    y = Y[:, None] * ys + shift[:, None]
    p4 = np.zeros((S, K, 4))
    p4[..., :2] = pt
    p4[..., 2] = np.where(valid, mt * np.sinh(y), 0.0)
    p4[..., 3] = np.where(valid, mt * np.cosh(y), 0.0)
    # rescale energies exactly onto W (bisection leaves ~1e-12 relative)
    return p4, ok


@dataclass(frozen=True)
class Beams:
    """SuperKEKB beam parameters (energies GeV, angle mrad, spreads GeV, luminous region cm)."""

    e_her_gev: float = 7.0
    e_ler_gev: float = 4.0
    crossing_mrad: float = 83.0
    sigma_e_her_gev: float = 4.4e-3
    sigma_e_ler_gev: float = 3.2e-3
    sqrt_s_nominal_gev: float = 10.5794
    spot_cm: tuple = (1.0e-3, 2.0e-5, 3.5e-2)

    def _scale(self) -> float:
        a = 0.5 * self.crossing_mrad * 1e-3
        eh, el = self.e_her_gev, self.e_ler_gev
        p = np.array([(eh + el) * np.sin(a), 0.0, (eh - el) * np.cos(a)])
        return self.sqrt_s_nominal_gev / np.sqrt((eh + el) ** 2 - p @ p)

    def nominal_p4(self) -> np.ndarray:
        """Four-momentum (4,) of the e+e- system at nominal energies (GeV)."""
        return self.sample(np.zeros(1, np.uint64), spread=False)[0][0]

    def sample(self, key, spread: bool = True):
        """e+e- system four-momentum (N, 4) and interaction point (N, 3) cm for event keys (N,)."""
        key = np.asarray(key, np.uint64)
        f = self._scale()
        a = 0.5 * self.crossing_mrad * 1e-3
        eh = self.e_her_gev * f + (self.sigma_e_her_gev * normal(key, 0, 1) if spread else 0.0)
        el = self.e_ler_gev * f + (self.sigma_e_ler_gev * normal(key, 0, 2) if spread else 0.0)
        eh = np.broadcast_to(eh, key.shape)
        el = np.broadcast_to(el, key.shape)
        p4 = np.stack([(eh + el) * np.sin(a), np.zeros_like(eh), (eh - el) * np.cos(a), eh + el], -1)
        vtx = np.stack([self.spot_cm[i] * normal(key, 0, 3 + i) for i in range(3)], -1)
        return p4, vtx

    def boost_to_cms(self) -> np.ndarray:
        """Velocity (3,) that takes lab four-vectors to the nominal CMS: use ``boost(p4, beta)``."""
        p = self.nominal_p4()
        return -p[:3] / p[3]
