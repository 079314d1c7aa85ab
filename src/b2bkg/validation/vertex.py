"""D0 -> K- pi+ vertex resolution (from D*+ -> D0 pi+) with no, true and generated PXD background.

The talk (seed 001) checks that generated PXD background leaves the D0 vertex resolution as the
true background does. Here: D*+ mesons with B-daughter-like momenta (CM momentum uniform in
0.5-2.5 GeV, isotropic, boosted with the Y(4S)), D*+ -> D0 pi+ (isotropic two-body decay), the D0
flies (exponential, c tau = 122.9 um times beta gamma) and decays to K- pi+; both daughters go
through the fast tracking chain of :mod:`b2bkg.validation.tracking` (overlay, clustering, PXD hit
attachment, refit); a vertex fit of the two helices gives the D0 decay point.

Vertex fit: near the vertex (sub-mm from the perigee, radii of curvature >= 20 cm) each track is
a straight line through its perigee point with its perigee direction; a vertex x predicts the
track's (d0, z0) as ``d0 = x sin(phi0) - y cos(phi0)``, ``z0 = z - tanl (x cos(phi0) + y sin(phi0))``;
the residual covariance is the track covariance propagated through (d0, z0, phi0, tanl); the
weighted least squares in x is solved in closed form and iterated (the weights depend on x).
The slow pion of the D*+ is not tracked (it does not enter the D0 vertex).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from b2bkg.core.errors import ConfigError

from .tracking import KAON_MASS_GEV, PION_MASS_GEV, Y4S_BETA_GAMMA, SignalSample, TrackingConfig, TrackResults, build_signal

__all__ = ["simulate_dstar", "fit_vertices", "VertexResults", "vertex_summary", "D0_MASS_GEV", "DSTAR_MASS_GEV", "D0_CTAU_MM"]

D0_MASS_GEV = 1.86484
DSTAR_MASS_GEV = 2.01026
D0_CTAU_MM = 0.1229


def _two_body_p(m, m1, m2):
    return np.sqrt((m**2 - (m1 + m2) ** 2) * (m**2 - (m1 - m2) ** 2)) / (2 * m)


def _isotropic(rng, n):
    c = rng.uniform(-1, 1, n)
    ph = rng.uniform(-np.pi, np.pi, n)
    s = np.sqrt(1 - c**2)
    return np.stack([s * np.cos(ph), s * np.sin(ph), c], axis=1)


def _boost(p4: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Boost four-momenta (n, 4) = (px, py, pz, E) by velocity ``beta`` (n, 3) (lab = rest + beta)."""
    b2 = np.sum(beta**2, axis=1)
    g = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p4[:, :3], axis=1)
    g2 = np.where(b2 > 0, (g - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    p = p4[:, :3] + (g2 * bp + g * p4[:, 3])[:, None] * beta
    return np.concatenate([p, (g * (p4[:, 3] + bp))[:, None]], axis=1)


def _decay(rng, parent4: np.ndarray, m_parent: float, m1: float, m2: float) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic two-body decay of parents (n, 4) -> daughters' four-momenta (n, 4) each."""
    n = len(parent4)
    q = _two_body_p(m_parent, m1, m2)
    d = _isotropic(rng, n) * q
    e1, e2 = np.hypot(q, m1), np.hypot(q, m2)
    beta = parent4[:, :3] / parent4[:, 3:4]
    a = _boost(np.concatenate([d, np.full((n, 1), e1)], axis=1), beta)
    b = _boost(np.concatenate([-d, np.full((n, 1), e2)], axis=1), beta)
    return a, b


def simulate_dstar(n_events: int, seed: int, config: TrackingConfig | None = None, *, decays_per_event: int = 5) -> SignalSample:
    """D*+ -> D0 (-> K- pi+) pi+ decays, ``decays_per_event`` per event before acceptance.

    Returns a :class:`SignalSample` whose tracks come in pairs (K-, pi+) sharing ``group`` (the
    decay index) and ``vertex`` (the true D0 decay point, mm); decays with a daughter outside the
    acceptance are dropped. Randomness: ``stream_rng(seed, "validation.vertex")``.
    """
    from b2bkg.core.seeding import stream_rng

    cfg = config or TrackingConfig()
    if n_events < 1 or decays_per_event < 1:
        raise ConfigError(f"events: {n_events} and decays_per_event: {decays_per_event} must be >= 1")
    rng = stream_rng(seed, "validation.vertex")
    n = n_events * decays_per_event
    pstar = rng.uniform(0.5, 2.5, n)
    p3 = _isotropic(rng, n) * pstar[:, None]
    dstar = np.concatenate([p3, np.hypot(pstar, DSTAR_MASS_GEV)[:, None]], axis=1)
    bz = Y4S_BETA_GAMMA / np.hypot(1.0, Y4S_BETA_GAMMA)
    dstar = _boost(dstar, np.tile([0.0, 0.0, bz], (n, 1)))
    d0, _slow = _decay(rng, dstar, DSTAR_MASS_GEV, D0_MASS_GEV, PION_MASS_GEV)
    k, pi = _decay(rng, d0, D0_MASS_GEV, KAON_MASS_GEV, PION_MASS_GEV)
    origin = rng.standard_normal((n, 3)) * np.asarray(cfg.beam_spot_sigma_mm)
    flight = rng.exponential(D0_CTAU_MM, n) / D0_MASS_GEV  # c tau / m: times p gives the flight length
    vtx = origin + d0[:, :3] * flight[:, None]
    mom = np.stack([k[:, :3], pi[:, :3]], axis=1).reshape(-1, 3)
    charge = np.tile([-1.0, 1.0], n)
    mass = np.tile([KAON_MASS_GEV, PION_MASS_GEV], n)
    vertex = np.repeat(vtx, 2, axis=0)
    group = np.repeat(np.arange(n, dtype=np.int64), 2)
    event = group // decays_per_event
    return build_signal(vertex, mom, charge, mass, event, n_events, rng, cfg, group=group)


@dataclass
class VertexResults:
    """Fitted D0 vertices (``m`` decays): ``x`` (m, 3) mm, ``cov`` (m, 3, 3), ``true`` (m, 3),
    ``residual`` (m, 3) mm, ``pull`` (m, 3), ``ok`` (m,), ``wrong`` (m,) a daughter has a wrong PXD hit."""

    x: np.ndarray
    cov: np.ndarray
    true: np.ndarray
    residual: np.ndarray
    pull: np.ndarray
    ok: np.ndarray
    wrong: np.ndarray


def fit_vertices(signal: SignalSample, tracks: TrackResults, n_iter: int = 3) -> VertexResults:
    """Two-track vertex fit of every decay (consecutive track pairs of one ``group``)."""
    p = tracks.p.reshape(-1, 2, 5)
    C = tracks.cov.reshape(-1, 2, 5, 5)
    m = len(p)
    d0, z0, phi, tl = p[..., 0], p[..., 1], p[..., 2], p[..., 4]
    sp, cp = np.sin(phi), np.cos(phi)
    A = np.zeros((m, 2, 2, 3))
    A[..., 0, 0], A[..., 0, 1] = sp, -cp
    A[..., 1, 0], A[..., 1, 1], A[..., 1, 2] = -tl * cp, -tl * sp, 1.0
    meas = np.stack([d0, z0], axis=-1)  # (m, 2, 2)
    x = np.zeros((m, 3))
    # first pass: weights from (d0, z0) block only; then include phi0/tanl uncertainty at x
    for it in range(n_iter):
        J = np.zeros((m, 2, 2, 5))
        J[..., 0, 0] = 1.0
        J[..., 1, 1] = 1.0
        if it > 0:
            s = x[:, None, 0] * cp + x[:, None, 1] * sp  # transverse flight projection
            J[..., 0, 2] = -(x[:, None, 0] * cp + x[:, None, 1] * sp)  # d(-d0_pred)/dphi0
            J[..., 1, 2] = tl * (-x[:, None, 0] * sp + x[:, None, 1] * cp)
            J[..., 1, 4] = s
        R = np.einsum("mtij,mtjk,mtlk->mtil", J, C, J)
        W = np.linalg.inv(R)
        AtW = np.einsum("mtji,mtjk->mtik", A, W)  # (m, 2, 3, 2)
        N = np.einsum("mtik,mtkj->mij", AtW, A)
        b = np.einsum("mtik,mtk->mi", AtW, meas)
        x = np.linalg.solve(N, b[..., None])[..., 0]
    cov = np.linalg.inv(N)
    true = signal.vertex.reshape(-1, 2, 3)[:, 0]
    res = x - true
    err = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 1e-30))
    ok = tracks.ok.reshape(-1, 2).all(axis=1) & np.isfinite(x).all(axis=1)
    wrong = tracks.wrong.reshape(-1, 4).any(axis=1)
    return VertexResults(x, cov, true, res, res / err, ok, wrong)


def vertex_summary(v: VertexResults) -> dict:
    """Gaussian-fit resolutions (um) and pull widths of the vertex coordinates, with errors."""
    from .tracking import fit_gaussian_width

    out: dict = {"n_decays": int(v.ok.sum()), "fraction_with_wrong_pxd_hit": float(v.wrong[v.ok].mean()) if v.ok.any() else float("nan")}
    for i, c in enumerate("xyz"):
        r_um = v.residual[v.ok, i] * 1e3
        scale = float(1.4826 * np.median(np.abs(r_um - np.median(r_um)))) if len(r_um) else 1.0
        w, e, _ = fit_gaussian_width(r_um / max(scale, 1e-9))
        out[f"{c}_resolution_um"], out[f"{c}_resolution_um_err"] = w * scale, e * scale
        pw, pe, _ = fit_gaussian_width(v.pull[v.ok, i])
        out[f"{c}_pull_width"], out[f"{c}_pull_width_err"] = pw, pe
    return out
