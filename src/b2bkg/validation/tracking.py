"""Fast track simulation, PXD hit attachment and helix refit: what PXD background does to tracks.

The chain of the paper's Figure 3 (seed 002) in a few vectorized numpy passes:

1. **Tracks**: charged pions and kaons of Y(4S)-decay-like momenta (a soft component like D* slow
   pions plus a broad B-daughter spectrum, isotropic in the centre-of-mass frame and boosted with
   beta*gamma = 0.284 along z), produced at a Gaussian beam spot, in a 1.5 T field along +z.
2. **Material and measurements**, in order along the track: the beam pipe (cylinder, 10 mm), the
   two PXD layers (the 8 + 12 ladder *planes* of :mod:`b2bkg.pxd.geometry`, windmill included;
   0.2 % X0 each), and four SVD strip layers (cylinders at 39, 80, 104, 135 mm, 0.6 % X0 each,
   r-phi / z resolution 10-15 / 20-30 um). At every material surface the direction gets two
   Gaussian kinks of the Highland width (momentum conserved, so pT changes with the dip).
3. **PXD signal digits** at the track crossings: the path across the 75 um of silicon is split
   into charge groups (MIP most probable 75 e-/um with a Moyal fluctuation, ~26 ADU at normal
   incidence), diffused (7 um) onto the real pixel grid (variable v pitch), summed per pixel,
   digitized (0.7 ADU noise, 216.7 e-/ADU, 7 ADU threshold): digits in the contract schema.
4. **Overlay** with PXD background digits (:func:`b2bkg.overlay.overlay_pxd`) and clustering
   with the clusterizer the metrics use (:func:`b2bkg.pxd.clusters.find_clusters`).
5. **Track finding into the PXD** as real tracking does it: the SVD hits seed the track
   (algebraic circle + line fit, then a helix fit); the helix is extrapolated to the ladder it
   crosses in layer 2, the cluster with the smallest chi2 (prediction + cluster covariance) inside
   a chi2 window is attached (a background cluster can win), the track is refitted and
   extrapolated to layer 1, the same again, and the final fit gives the perigee parameters.
6. **Fit**: a generalised least-squares helix fit (Gauss-Newton, numerical Jacobians) in which
   multiple scattering enters as correlated measurement covariance
   ``V = diag(sigma_meas^2) + G diag(theta0^2) G^T`` (``G`` = derivative of the measurements with
   respect to the kink angles at each material surface). It is equivalent to a Kalman filter +
   smoother with the same material. For an extrapolation *to* a PXD layer, the kinks inside that
   layer are left out, so the fitted helix describes the track segment just outside it and its
   covariance is the extrapolation error.

Helix parameters (perigee with respect to the z axis), ``p = (d0, z0, phi0, omega, tanl)``:
``d0`` (mm; positive when (r x p)_z > 0), ``z0`` (mm), ``phi0`` (rad, momentum azimuth at the
perigee), ``omega`` = charge / radius (1/mm; dphi/ds = -omega with B along +z), ``tanl`` = pz / pT.
Lengths are in mm throughout, momenta in GeV.

Example:
    >>> cfg = TrackingConfig()
    >>> sig = simulate_signal(200, seed=1, config=cfg, tracks_per_event=10)
    >>> res = reconstruct(sig, None, cfg)       # (a) no PXD background
    >>> bool(abs(np.std(res.pulls[res.ok, 0]) - 1) < 0.3)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError
from b2bkg.io.events import PxdDigits
from b2bkg.pxd import geometry as geo

__all__ = [
    "TrackingConfig", "SignalSample", "TrackResults", "PARAM_NAMES", "PT_BINS", "PION_MASS_GEV", "KAON_MASS_GEV",
    "perigee_to_state", "state_to_perigee", "propagate_to_cylinder", "propagate_to_plane", "omega_from_pt",
    "highland_theta0", "trajectory", "fit_helix", "sample_y4s_tracks", "simulate_tracks", "simulate_signal",
    "pxd_signal_digits", "cluster_table", "reconstruct", "fit_gaussian_width", "seed_from_svd", "predict_layer",
]

C_LIGHT = 0.299792458  #: GeV / (T m)
PION_MASS_GEV = 0.13957
KAON_MASS_GEV = 0.493677
Y4S_BETA_GAMMA = 0.2835  #: boost of the CM frame along +z (7 GeV e- on 4 GeV e+)
PARAM_NAMES = ("d0", "z0", "phi0", "omega", "tanl")
#: transverse-momentum bins of the paper's Figure 3 (GeV)
PT_BINS = {"pt_lt_0.2": (0.0, 0.2), "pt_0.2_1": (0.2, 1.0)}

N_SURF = 7  #: surfaces: 0 beam pipe, 1 PXD layer 1, 2 PXD layer 2, 3..6 SVD layers
_PXD_SURF = (1, 2)
_MISSING_SIGMA_MM = 1.0e3  # a missing measurement: residual 0 with this error (no information)

# state columns
_X, _Y, _Z, _PHI, _TANL, _OM = range(6)


@dataclass(frozen=True)
class TrackingConfig:
    """Detector, digitization and track-finding knobs of the fast tracking (lengths in mm)."""

    field_t: float = 1.5
    beam_pipe_radius_mm: float = 10.0
    beam_pipe_x0: float = 0.005  # [assume] Be double wall + cooling + gold foil, fraction of X0
    pxd_x0: float = 0.002
    svd_radii_mm: tuple[float, ...] = (39.0, 80.0, 104.0, 135.0)
    svd_x0: float = 0.006
    svd_sigma_u_um: tuple[float, ...] = (10.0, 15.0, 15.0, 15.0)
    svd_sigma_v_um: tuple[float, ...] = (20.0, 30.0, 30.0, 30.0)
    beam_spot_sigma_mm: tuple[float, float, float] = (0.010, 0.0003, 0.35)
    # PXD signal digitization (as the PXD truth simulator)
    mip_e_per_um: float = 75.0
    landau_width: float = 0.09
    diffusion_um: float = 7.0
    group_step_um: float = 10.0
    electrons_per_adu: float = 216.7
    noise_adu: float = 0.7
    threshold_adu: int = 7
    # cluster position errors: sigma = factor * pitch / sqrt(12), factor by cluster extent 1, 2, >=3
    cluster_error_factor: tuple[float, float, float] = (0.9, 0.45, 0.6)
    # track finding
    window_chi2: float = 25.0  # attach the best PXD cluster with chi2 (2 dof) below this
    fit_iterations: int = 3
    # track sample
    soft_fraction: float = 0.35  # share of soft (D*-slow-pion-like) tracks, p* uniform in soft range
    soft_p_gev: tuple[float, float] = (0.05, 0.30)
    hard_p_mean_gev: float = 0.75  # B-daughter-like p*: Gamma(k=2) with this mean
    p_max_gev: float = 3.5
    kaon_fraction: float = 0.2
    theta_range_deg: tuple[float, float] = (17.0, 150.0)
    pt_min_gev: float = 0.05

    def __post_init__(self):
        check_range("field_t", self.field_t, 0.1, 10.0, "T")
        check_range("beam_pipe_radius_mm", self.beam_pipe_radius_mm, 1.0, 13.5, "mm")
        for name in ("beam_pipe_x0", "pxd_x0", "svd_x0"):
            check_range(name, getattr(self, name), 0.0, 0.2)
        if len(self.svd_radii_mm) != 4 or len(self.svd_sigma_u_um) != 4 or len(self.svd_sigma_v_um) != 4:
            raise ConfigError("svd_radii_mm, svd_sigma_u_um, svd_sigma_v_um: need 4 values each (SVD layers 3-6)")
        if list(self.svd_radii_mm) != sorted(self.svd_radii_mm) or self.svd_radii_mm[0] <= 25.0:
            raise ConfigError(f"svd_radii_mm: {self.svd_radii_mm} must increase and lie outside the PXD (> 25 mm)")
        check_range("threshold_adu", self.threshold_adu, 1, 255, "ADU")
        check_range("window_chi2", self.window_chi2, 0.0, None)
        check_range("fit_iterations", self.fit_iterations, 1, 50)
        check_range("soft_fraction", self.soft_fraction, 0.0, 1.0)
        check_range("kaon_fraction", self.kaon_fraction, 0.0, 1.0)
        check_range("pt_min_gev", self.pt_min_gev, 0.035, 5.0, "GeV")

    @property
    def surface_radii_mm(self) -> np.ndarray:
        """Nominal radius of the 7 surfaces (PXD: ladder plane distance), shape (7,)."""
        return np.array([self.beam_pipe_radius_mm, geo.LADDER_RADIUS_MM[1], geo.LADDER_RADIUS_MM[2], *self.svd_radii_mm])

    @property
    def surface_x0(self) -> np.ndarray:
        """Material (fraction of X0 at normal incidence) of the 7 surfaces, shape (7,)."""
        return np.array([self.beam_pipe_x0, self.pxd_x0, self.pxd_x0, *([self.svd_x0] * 4)])


# ----------------------------------------------------------------------------------------------
# helix geometry (vectorized over tracks). A state is an array (n, 6): x, y, z (mm), phi (rad),
# tanl, omega (1/mm), the point and the direction of a helix.
# ----------------------------------------------------------------------------------------------
def omega_from_pt(pt_gev, charge, field_t: float) -> np.ndarray:
    """Signed curvature omega = charge / R (1/mm) of transverse momentum ``pt_gev`` in ``field_t``."""
    return np.asarray(charge, np.float64) * C_LIGHT * field_t * 1e-3 / np.asarray(pt_gev, np.float64)


def _pt(omega, field_t):
    return C_LIGHT * field_t * 1e-3 / np.abs(omega)


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def perigee_to_state(p: np.ndarray) -> np.ndarray:
    """Perigee parameters (n, 5) -> state (n, 6) at the perigee point."""
    d0, z0, phi0, om, tl = p.T
    return np.stack([d0 * np.sin(phi0), -d0 * np.cos(phi0), z0, phi0, tl, om], axis=1)


def state_to_perigee(st: np.ndarray) -> np.ndarray:
    """State (n, 6) -> perigee parameters (n, 5) of the same helix with respect to the z axis."""
    x, y, z, phi, tl, om = st.T
    rho = 1.0 / om
    cx, cy = x + rho * np.sin(phi), y - rho * np.cos(phi)
    k = np.sign(rho) * np.hypot(cx, cy)  # = d0 + rho
    phi0 = np.arctan2(cx / k, -cy / k)
    d0 = k - rho
    s = _wrap(phi0 - phi) / om  # transverse arc length perigee -> point (phi = phi0 - om s)
    return np.stack([d0, z - s * tl, phi0, om, tl], axis=1)


def _move(st: np.ndarray, psi: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move each helix forward to the first point with direction in ``psi`` (n, k candidates).

    Returns (new state (n, 6), transverse arc length (n,)); rows with no valid candidate keep
    their state and get s = inf.
    """
    phi, om = st[:, _PHI, None], st[:, _OM, None]
    period = 2 * np.pi / np.abs(om)
    s = np.mod((phi - psi) / om, period)
    s = np.where(ok & (s > 1e-9), s, np.inf)
    j = np.argmin(s, axis=1)
    rows = np.arange(len(st))
    s_min, psi_min = s[rows, j], psi[rows, j]
    good = np.isfinite(s_min)
    rho = 1.0 / st[:, _OM]
    cx, cy = st[:, _X] + rho * np.sin(st[:, _PHI]), st[:, _Y] - rho * np.cos(st[:, _PHI])
    new = st.copy()
    new[:, _X] = np.where(good, cx - rho * np.sin(psi_min), st[:, _X])
    new[:, _Y] = np.where(good, cy + rho * np.cos(psi_min), st[:, _Y])
    new[:, _Z] = np.where(good, st[:, _Z] + np.where(good, s_min, 0) * st[:, _TANL], st[:, _Z])
    new[:, _PHI] = np.where(good, psi_min, st[:, _PHI])
    return new, s_min


def propagate_to_cylinder(st: np.ndarray, radius) -> tuple[np.ndarray, np.ndarray]:
    """First forward crossing of each helix with the cylinder r = ``radius`` (mm, scalar or (n,)).

    Returns (state at the crossing (n, 6), transverse path length (n,) mm, inf where none).
    """
    rho = 1.0 / st[:, _OM]
    cx, cy = st[:, _X] + rho * np.sin(st[:, _PHI]), st[:, _Y] - rho * np.cos(st[:, _PHI])
    cc = np.hypot(cx, cy)
    c = (np.asarray(radius, np.float64) ** 2 - cc**2 - rho**2) / (2 * rho * cc)
    ok = np.abs(c) <= 1.0
    beta = np.arctan2(-cx, cy)
    a = np.arccos(np.clip(c, -1.0, 1.0))
    psi = np.stack([beta + a, beta - a], axis=1)
    return _move(st, psi, np.stack([ok, ok], axis=1))


def propagate_to_plane(st: np.ndarray, normal_phi, distance) -> tuple[np.ndarray, np.ndarray]:
    """First forward crossing with the plane n.x = ``distance`` (n = (cos a, sin a, 0)).

    ``normal_phi`` (rad) and ``distance`` (mm): scalars or arrays of shape (n,).
    Returns (state at the crossing (n, 6), transverse path length (n,) mm, inf where none).
    """
    rho = 1.0 / st[:, _OM]
    a = np.broadcast_to(np.asarray(normal_phi, np.float64), (len(st),))
    cx, cy = st[:, _X] + rho * np.sin(st[:, _PHI]), st[:, _Y] - rho * np.cos(st[:, _PHI])
    q = (distance - (np.cos(a) * cx + np.sin(a) * cy)) / rho
    ok = np.abs(q) <= 1.0
    asq = np.arcsin(np.clip(q, -1.0, 1.0))
    psi = np.stack([a - asq, a - np.pi + asq], axis=1)
    return _move(st, psi, np.stack([ok, ok], axis=1))


def _direction(st: np.ndarray) -> np.ndarray:
    """Unit direction (n, 3)."""
    cl = 1.0 / np.sqrt(1.0 + st[:, _TANL] ** 2)
    return np.stack([cl * np.cos(st[:, _PHI]), cl * np.sin(st[:, _PHI]), cl * st[:, _TANL]], axis=1)


def _kink(st: np.ndarray, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
    """Deflect by t1 (horizontal, perpendicular to the direction) and t2 (in the dip plane), rad.
    The momentum is conserved: pT, hence omega, changes with the dip angle."""
    lam = np.arctan(st[:, _TANL])
    lam2 = lam + t2
    new = st.copy()
    new[:, _PHI] = st[:, _PHI] + t1 / np.cos(lam)
    new[:, _TANL] = np.tan(lam2)
    new[:, _OM] = st[:, _OM] * np.cos(lam) / np.cos(lam2)
    return new


def highland_theta0(p_gev, mass_gev, x0_eff) -> np.ndarray:
    """Highland-Lynch-Dahl width of the projected scattering angle (rad), PDG form.

    Args: momentum (GeV), mass (GeV), traversed material in units of X0 (already divided by the
    cosine of the incidence angle); arrays broadcast.
    """
    p = np.asarray(p_gev, np.float64)
    beta = p / np.hypot(p, mass_gev)
    x = np.maximum(np.asarray(x0_eff, np.float64), 1e-12)
    return 0.0136 / (beta * p) * np.sqrt(x) * np.maximum(1.0 + 0.038 * np.log(x / beta**2), 0.0)


def _pxd_layer_crossing(st: np.ndarray, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """First crossing of each helix with an active PXD sensor of ``layer`` (1 or 2).

    Returns (sensor index (n,) int64, -1 where the layer is missed; state at the crossing (n, 6)).
    """
    lp = geo.ladder_planes()
    sel = np.flatnonzero(lp["layer"] == layer)
    n = len(st)
    best_s = np.full(n, np.inf)
    best_sensor = np.full(n, -1, np.int64)
    best_st = st.copy()
    for j in sel:  # loop over the 8 / 12 ladders of the layer (geometry, not hits)
        a, r, shift = lp["phi"][j], lp["radius"][j], lp["shift"][j]
        new, s = propagate_to_plane(st, a, r)
        u = -new[:, _X] * np.sin(a) + new[:, _Y] * np.cos(a) - shift
        zj, length = lp["z_joint"][j], lp["length"][j]
        inside = np.isfinite(s) & (np.abs(u) <= 0.5 * geo.SENSOR_WIDTH_MM) & (new[:, _Z] >= zj - length) & (new[:, _Z] <= zj + length)
        better = inside & (s < best_s)
        best_s = np.where(better, s, best_s)
        best_sensor = np.where(better, np.where(new[:, _Z] >= zj, lp["sensor1"][j], lp["sensor1"][j] + 1), best_sensor)
        best_st = np.where(better[:, None], new, best_st)
    return best_sensor, best_st


def _local_on_sensor(st: np.ndarray, sensor: np.ndarray) -> np.ndarray:
    """Local (u, v) (mm) of the state's point on ``sensor`` (any valid index where -1), (n, 2)."""
    s = np.where(sensor >= 0, sensor, 0)
    u, v, _ = geo.global_to_local(s, st[:, _X], st[:, _Y], st[:, _Z])
    return np.stack([u, v], axis=1)


def trajectory(p: np.ndarray, cfg: TrackingConfig, *, sensors: np.ndarray | None = None, kinks: np.ndarray | None = None,
               rng: np.random.Generator | None = None, mass: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Follow helices from their perigee through the 7 surfaces.

    Args:
        p: perigee parameters, shape (n, 5).
        cfg: the detector description.
        sensors: PXD sensor crossed on layers 1 and 2, shape (n, 2), -1 = layer not crossed; None:
            take the first active sensor the helix crosses (truth / prediction).
        kinks: scattering angles applied after each surface, shape (n, 7, 2) rad; None: no kinks,
            unless ``rng`` is given: then Gaussian kinks of the Highland width are drawn (needs
            ``mass``, shape (n,) GeV).

    Returns:
        dict with ``loc`` (n, 7, 2): measured coordinates per surface (cylinders: r*phi and z;
        PXD: local u, v of the sensor), ``ok`` (n, 7) bool (surface reached), ``sensors`` (n, 2),
        ``cos_inc`` (n, 7) cosine of the incidence angle to the surface normal, ``state`` (n, 7, 6)
        the state at each surface (before its kink), ``kinks`` (n, 7, 2) the kinks applied.
    """
    n = len(p)
    st = perigee_to_state(np.asarray(p, np.float64))
    loc = np.zeros((n, N_SURF, 2))
    ok = np.zeros((n, N_SURF), bool)
    cos_inc = np.ones((n, N_SURF))
    states = np.zeros((n, N_SURF, 6))
    applied = np.zeros((n, N_SURF, 2))
    sens_out = np.full((n, 2), -1, np.int64) if sensors is None else np.asarray(sensors, np.int64).copy()
    radii, x0 = cfg.surface_radii_mm, cfg.surface_x0
    alive = np.ones(n, bool)
    for k in range(N_SURF):
        if k in _PXD_SURF:
            li = k - 1
            if sensors is None:
                sen, new = _pxd_layer_crossing(st, li + 1)
                sens_out[:, li] = np.where(alive, sen, -1)
                reached = sen >= 0
            else:
                sen = sens_out[:, li]
                s0 = np.where(sen >= 0, sen, 0)
                new, s = propagate_to_plane(st, geo.LADDER_PHI_RAD[s0], geo.RADIUS_MM[s0])
                reached = (sen >= 0) & np.isfinite(s)
            loc[:, k] = _local_on_sensor(new, sens_out[:, li])
            a = geo.LADDER_PHI_RAD[np.where(sens_out[:, li] >= 0, sens_out[:, li], 0)]
            nrm = np.stack([np.cos(a), np.sin(a), np.zeros(n)], axis=1)
        else:
            new, s = propagate_to_cylinder(st, radii[k])
            reached = np.isfinite(s)
            phi = np.arctan2(new[:, _Y], new[:, _X])
            loc[:, k, 0] = radii[k] * phi
            loc[:, k, 1] = new[:, _Z]
            nrm = np.stack([np.cos(phi), np.sin(phi), np.zeros(n)], axis=1)
            if k > N_SURF - 5:  # SVD layers must all be reached
                alive &= reached
        reached &= alive
        st = np.where(reached[:, None], new, st)
        states[:, k] = st
        ok[:, k] = reached
        cos_inc[:, k] = np.abs(np.einsum("ij,ij->i", _direction(st), nrm))
        if kinks is not None:
            t = np.asarray(kinks)[:, k]
        elif rng is not None:
            pt = _pt(st[:, _OM], cfg.field_t)
            pmag = pt * np.sqrt(1.0 + st[:, _TANL] ** 2)
            th0 = highland_theta0(pmag, mass, x0[k] / np.maximum(cos_inc[:, k], 0.05))
            t = rng.standard_normal((n, 2)) * th0[:, None]
        else:
            t = None
        if t is not None:
            t = np.where(reached[:, None], t, 0.0)
            applied[:, k] = t
            st = _kink(st, t[:, 0], t[:, 1])
    return {"loc": loc, "ok": ok, "sensors": sens_out, "cos_inc": cos_inc, "state": states, "kinks": applied}


# ----------------------------------------------------------------------------------------------
# generalised least-squares helix fit
# ----------------------------------------------------------------------------------------------
_STEPS = np.array([1e-4, 1e-4, 1e-6, 0.0, 1e-6])  # omega: relative step (below)
_KINK_STEP = 1e-6


def _residual(meas: np.ndarray, pred: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """meas - pred for (..., 6, 2) arrays of surfaces 1..6; r*phi of cylinders wrapped."""
    r = meas - pred
    cyl = radii[3:]
    r[..., 2:, 0] = (r[..., 2:, 0] + np.pi * cyl) % (2 * np.pi * cyl) - np.pi * cyl
    return r


def fit_helix(p0: np.ndarray, meas: np.ndarray, sigma: np.ndarray, sensors: np.ndarray, mass: np.ndarray,
              cfg: TrackingConfig, *, kink_surfaces=(0, 1, 2, 3, 4, 5), n_iter: int | None = None) -> dict[str, np.ndarray]:
    """Generalised least-squares helix fit with multiple scattering as correlated covariance.

    Args:
        p0: starting perigee parameters, shape (n, 5).
        meas: measured coordinates of surfaces 1..6 (PXD 1, 2, SVD 3..6), shape (n, 6, 2), mm
            (PXD: local u, v; SVD: r*phi, z).
        sigma: their errors, shape (n, 6, 2), mm; ``np.inf`` marks a missing measurement.
        sensors: PXD sensors of layers 1, 2 (where their material and measurement sit), (n, 2).
        mass: particle mass hypothesis (GeV), shape (n,).
        kink_surfaces: surfaces (0..6) whose scattering enters the covariance; leaving out the
            ones inside a layer makes the result the helix just outside it (for extrapolation).

    Returns:
        dict with ``p`` (n, 5), ``cov`` (n, 5, 5), ``chi2`` (n,), ``ndf`` (n,), ``ok`` (n,) bool.
    """
    n = len(p0)
    p = np.array(p0, np.float64)
    radii = cfg.surface_radii_mm
    miss = ~np.isfinite(sigma)
    var = np.where(miss, _MISSING_SIGMA_MM**2, sigma**2).reshape(n, 12)
    ksurf = np.zeros(N_SURF, bool)
    ksurf[list(kink_surfaces)] = True
    n_iter = int(n_iter or cfg.fit_iterations)
    ok = np.ones(n, bool)
    for it in range(n_iter):
        # one vectorized call: nominal, 5 parameter steps, 14 kink steps
        steps = _STEPS.copy()
        h_om = 1e-6 * np.abs(p[:, 3])
        pp = np.repeat(p[None], 6 + 2 * N_SURF, axis=0)  # (20, n, 5)
        for j in range(5):
            if j == 3:
                pp[1 + j, :, 3] += h_om
            else:
                pp[1 + j, :, j] += steps[j]
        kk = np.zeros((6 + 2 * N_SURF, n, N_SURF, 2))
        for k in range(N_SURF):
            for c in range(2):
                kk[6 + 2 * k + c, :, k, c] = _KINK_STEP
        tr = trajectory(pp.reshape(-1, 5), cfg, sensors=np.tile(sensors, (6 + 2 * N_SURF, 1)), kinks=kk.reshape(-1, N_SURF, 2))
        loc = tr["loc"].reshape(6 + 2 * N_SURF, n, N_SURF, 2)[:, :, 1:]
        reach = tr["ok"].reshape(6 + 2 * N_SURF, n, N_SURF)[0]
        h0 = loc[0]
        dh = _residual(loc[1:], h0[None], radii)  # (19, n, 6, 2) = h(step) - h0 (wrapped)
        denom = np.concatenate([steps[:3], [1.0], steps[4:]])
        H = np.empty((n, 12, 5))
        for j in range(5):
            d = h_om if j == 3 else denom[j]
            H[:, :, j] = (dh[j] / (d[:, None, None] if j == 3 else d)).reshape(n, 12)
        G = (dh[5:] / _KINK_STEP).reshape(2 * N_SURF, n, 12).transpose(1, 2, 0)  # (n, 12, 14)
        # Highland widths from the current helix at each surface
        pt = _pt(p[:, 3], cfg.field_t)
        pmag = pt * np.sqrt(1.0 + p[:, 4] ** 2)
        cos_inc = tr["cos_inc"].reshape(6 + 2 * N_SURF, n, N_SURF)[0]
        th0 = highland_theta0(pmag[:, None], mass[:, None], cfg.surface_x0[None] / np.maximum(cos_inc, 0.05))
        th0 = np.where(ksurf[None] & reach, th0, 0.0)
        S = np.repeat(th0**2, 2, axis=1)  # (n, 14)
        V = np.einsum("nmk,nk,nlk->nml", G, S, G)
        V[:, np.arange(12), np.arange(12)] += var
        r = _residual(meas, h0, radii)
        r = np.where(miss, 0.0, r).reshape(n, 12)
        lost = ~reach[:, 1:].repeat(2, axis=1) & ~miss.reshape(n, 12)  # a measured surface the helix misses
        ok &= ~lost.any(axis=1) & np.isfinite(r).all(axis=1)
        r = np.where(np.isfinite(r), r, 0.0)
        Vi_H = np.linalg.solve(V, H)
        Vi_r = np.linalg.solve(V, r[..., None])[..., 0]
        A = np.einsum("nmi,nmj->nij", H, Vi_H)
        b = np.einsum("nmi,nm->ni", H, Vi_r)
        try:
            dp = np.linalg.solve(A, b[..., None])[..., 0]
        except np.linalg.LinAlgError:
            dp = np.zeros_like(b)
            ok[:] = False
        if it < n_iter - 1:
            dp = np.where(ok[:, None] & np.isfinite(dp), dp, 0.0)
            p = p + dp
            p[:, 2] = _wrap(p[:, 2])
    cov = np.linalg.inv(A)
    chi2 = np.einsum("nm,nm->n", r, Vi_r)
    ndf = (~miss).reshape(n, 12).sum(axis=1) - 5
    # final small step of the last iteration is applied for the parameters (covariance at p)
    p = p + np.where(ok[:, None] & np.isfinite(dp), dp, 0.0)
    p[:, 2] = _wrap(p[:, 2])
    return {"p": p, "cov": cov, "chi2": chi2, "ndf": ndf, "ok": ok & np.isfinite(p).all(axis=1)}


def seed_from_svd(meas: np.ndarray, cfg: TrackingConfig) -> np.ndarray:
    """Starting helix from the 4 SVD points: algebraic (Kasa) circle fit, then z = z0 + s tanl.

    Args: meas (n, 6, 2) with SVD at rows 2..5 (r*phi, z). Returns perigee parameters (n, 5).
    """
    radii = np.asarray(cfg.svd_radii_mm)
    phi = meas[:, 2:, 0] / radii
    x, y, z = radii * np.cos(phi), radii * np.sin(phi), meas[:, 2:, 1]
    # circle x^2 + y^2 + D x + E y + F = 0 through the points (least squares)
    A = np.stack([x, y, np.ones_like(x)], axis=2)
    b = -(x**2 + y**2)
    AtA = np.einsum("nki,nkj->nij", A, A)
    Atb = np.einsum("nki,nk->ni", A, b)
    sol = np.linalg.solve(AtA, Atb[..., None])[..., 0]
    cx, cy = -sol[:, 0] / 2, -sol[:, 1] / 2
    R = np.sqrt(np.maximum(cx**2 + cy**2 - sol[:, 2], 1e-6))
    # direction of motion: from the first to the second SVD point; sign of rotation gives the charge
    cross = (x[:, 0] - cx) * (y[:, 1] - cy) - (y[:, 0] - cy) * (x[:, 1] - cx)
    q = np.where(cross < 0, 1.0, -1.0)  # clockwise (cross < 0) = positive charge in B along +z
    om = q / R
    # state at the first SVD point: direction perpendicular to the radius vector, following the rotation
    px0, py0 = x[:, 0] - cx, y[:, 0] - cy
    phi_dir = np.arctan2(py0, px0) + np.where(q > 0, -np.pi / 2, np.pi / 2)
    # arc lengths between the points for the z fit
    ang = np.arctan2(y - cy[:, None], x - cx[:, None])
    dang = _wrap(ang - ang[:, :1]) * (-q[:, None])  # >= 0 along the motion
    s = R[:, None] * np.unwrap(dang, axis=1)
    sm, zm = s.mean(axis=1, keepdims=True), z.mean(axis=1, keepdims=True)
    tl = ((s - sm) * (z - zm)).sum(axis=1) / np.maximum(((s - sm) ** 2).sum(axis=1), 1e-9)
    z1 = (zm - tl[:, None] * sm)[:, 0]
    st = np.stack([x[:, 0], y[:, 0], z1, phi_dir, tl, om], axis=1)
    return state_to_perigee(st)


# ----------------------------------------------------------------------------------------------
# track sample and signal digits
# ----------------------------------------------------------------------------------------------
def sample_y4s_tracks(n: int, rng: np.random.Generator, cfg: TrackingConfig) -> dict[str, np.ndarray]:
    """Charged pions / kaons with Y(4S)-decay-like momenta, inside the tracking acceptance.

    A share ``soft_fraction`` has CM momentum uniform in ``soft_p_gev`` (slow pions of D*
    decays, soft B daughters), the rest Gamma(k=2) with mean ``hard_p_mean_gev`` (capped at
    ``p_max_gev``); isotropic in the CM frame, boosted along +z (beta*gamma = 0.2835); kept if
    the lab polar angle is in ``theta_range_deg`` and pT >= ``pt_min_gev`` (reaches every SVD layer).

    Returns:
        dict of ``px, py, pz`` (GeV), ``mass`` (GeV), ``charge`` (+-1), each shape (n,).
    """
    out = {k: [] for k in ("px", "py", "pz", "mass", "charge")}
    have = 0
    bg = Y4S_BETA_GAMMA
    g = np.hypot(1.0, bg)
    while have < n:
        m = 2 * (n - have) + 16
        soft = rng.random(m) < cfg.soft_fraction
        p = np.where(soft, rng.uniform(*cfg.soft_p_gev, m), np.minimum(rng.gamma(2.0, cfg.hard_p_mean_gev / 2, m), cfg.p_max_gev))
        mass = np.where(rng.random(m) < cfg.kaon_fraction, KAON_MASS_GEV, PION_MASS_GEV)
        cth = rng.uniform(-1, 1, m)
        ph = rng.uniform(-np.pi, np.pi, m)
        sth = np.sqrt(1 - cth**2)
        px, py, pz = p * sth * np.cos(ph), p * sth * np.sin(ph), p * cth
        e = np.hypot(p, mass)
        pz = g * pz + bg * e
        theta = np.degrees(np.arctan2(np.hypot(px, py), pz))
        keep = (theta >= cfg.theta_range_deg[0]) & (theta <= cfg.theta_range_deg[1]) & (np.hypot(px, py) >= cfg.pt_min_gev)
        q = np.where(rng.random(m) < 0.5, 1.0, -1.0)
        for k, v in zip(out, (px, py, pz, mass, q)):
            out[k].append(v[keep])
        have += int(keep.sum())
    return {k: np.concatenate(v)[:n] for k, v in out.items()}


def _perigee_from_production(vertex: np.ndarray, mom: np.ndarray, charge: np.ndarray, field_t: float) -> np.ndarray:
    """Perigee parameters (n, 5) of the helix through ``vertex`` (n, 3) mm with momentum ``mom`` (n, 3) GeV."""
    pt = np.hypot(mom[:, 0], mom[:, 1])
    st = np.stack([vertex[:, 0], vertex[:, 1], vertex[:, 2], np.arctan2(mom[:, 1], mom[:, 0]), mom[:, 2] / pt,
                   omega_from_pt(pt, charge, field_t)], axis=1)
    return state_to_perigee(st)


def simulate_tracks(vertex: np.ndarray, mom: np.ndarray, charge: np.ndarray, mass: np.ndarray, rng: np.random.Generator,
                    cfg: TrackingConfig) -> dict[str, np.ndarray]:
    """Propagate true tracks with scattering, measure the SVD, keep what the PXD needs.

    Args:
        vertex: production points (n, 3) mm; mom: momenta (n, 3) GeV; charge (n,); mass (n,) GeV.

    Returns:
        dict with ``p_true`` (n, 5) perigee parameters at production, ``svd`` (n, 4, 2) measured
        r*phi, z (mm), ``pxd_sensor`` (n, 2) true sensors (-1 missed), ``pxd_state`` (n, 2, 6) the
        state at the PXD crossings, ``accepted`` (n,) every SVD layer reached and both PXD layers crossed.
    """
    p_true = _perigee_from_production(vertex, mom, charge, cfg.field_t)
    # start the propagation at the production point (not the perigee): same helix, and the
    # scattering happens after production
    tr = trajectory(p_true, cfg, rng=rng, mass=mass)
    su = np.asarray(cfg.svd_sigma_u_um) * 1e-3
    sv = np.asarray(cfg.svd_sigma_v_um) * 1e-3
    svd = tr["loc"][:, 3:].copy()
    svd[:, :, 0] += rng.standard_normal((len(p_true), 4)) * su
    svd[:, :, 1] += rng.standard_normal((len(p_true), 4)) * sv
    accepted = tr["ok"][:, 3:].all(axis=1) & (tr["sensors"] >= 0).all(axis=1)
    return {"p_true": p_true, "svd": svd, "pxd_sensor": tr["sensors"], "pxd_state": tr["state"][:, 1:3], "accepted": accepted}


def pxd_signal_digits(event: np.ndarray, sensor: np.ndarray, state: np.ndarray, track: np.ndarray, n_events: int,
                      rng: np.random.Generator, cfg: TrackingConfig) -> tuple[PxdDigits, np.ndarray]:
    """Digits of MIP crossings of PXD sensors (no background, no pedestal).

    Args:
        event: event index of each crossing, (m,); sensor: sensor index (m,); state: helix state at
            the crossing of the sensor's mid-plane (m, 6); track: track id of each crossing (m,).
        n_events: number of events of the output.

    Returns:
        (PxdDigits of ``n_events`` events, hit_track (n_hits,) int64: the track that deposited the
        larger part of each pixel's charge).
    """
    m = len(sensor)
    d = _direction(state)
    a = geo.LADDER_PHI_RAD[sensor]
    nw = np.cos(a) * d[:, 0] + np.sin(a) * d[:, 1]  # along the sensor normal
    du_dir = -np.sin(a) * d[:, 0] + np.cos(a) * d[:, 1]
    nw = np.where(np.abs(nw) < 0.05, 0.05 * np.sign(nw + 1e-30), nw)
    t = geo.THICKNESS_MM
    seg_u, seg_v = t * du_dir / nw, t * d[:, 2] / nw  # projected path across the thickness (mm)
    path_um = t / np.abs(nw) * 1e3
    z2 = np.square(rng.standard_normal(m))
    f = 1.0 + cfg.landau_width * np.minimum(-np.log(np.maximum(z2, 1e-300)), 25.0)
    q_e = path_um * cfg.mip_e_per_um * np.maximum(f, 0.3)
    loc = _local_on_sensor(state, sensor)
    ng = np.maximum(np.ceil(np.hypot(seg_u, seg_v) * 1e3 / cfg.group_step_um).astype(np.int64), 6)
    idx = np.repeat(np.arange(m), ng)
    first = np.cumsum(ng) - ng
    j = np.arange(len(idx)) - first[idx]
    share = rng.gamma(3.0, 1.0, len(idx))
    tot = np.add.reduceat(share, first) if m else np.zeros(0)
    q = q_e[idx] * share / tot[idx]
    tpos = (j + rng.random(len(idx))) / ng[idx] - 0.5
    diff = rng.standard_normal((2, len(idx))) * cfg.diffusion_um * 1e-3
    u = loc[idx, 0] + tpos * seg_u[idx] + diff[0]
    v = loc[idx, 1] + tpos * seg_v[idx] + diff[1]
    sen = sensor[idx]
    uc, vc = geo.local_to_pixel(sen, u, v)
    inside = uc >= 0
    from b2bkg.overlay.pxd import pixel_event_key

    key = pixel_event_key(event[idx][inside], sen[inside], uc[inside], vc[inside])
    qi, ti = q[inside], track[idx][inside]
    ukey, inv = np.unique(key, return_inverse=True)
    charge_e = np.bincount(inv, weights=qi, minlength=len(ukey))
    # track of the larger deposit in each pixel
    trk = np.full(len(ukey), -1, np.int64)
    o = np.lexsort((qi, inv))  # by pixel, then charge: last of each pixel is the largest
    last = np.r_[np.flatnonzero(np.diff(inv[o])), len(o) - 1] if len(o) else np.zeros(0, np.int64)
    trk[inv[o][last]] = ti[o][last]
    adu = np.rint(charge_e / cfg.electrons_per_adu + cfg.noise_adu * rng.standard_normal(len(ukey)))
    fired = adu >= cfg.threshold_adu
    ukey, adu, trk = ukey[fired], np.minimum(adu[fired], 255), trk[fired]
    vcell = ukey % geo.N_VCELLS
    rest = ukey // geo.N_VCELLS
    ucell = rest % geo.N_UCELLS
    rest //= geo.N_UCELLS
    s_out = rest % geo.N_SENSORS
    ev = rest // geo.N_SENSORS
    offsets = np.searchsorted(ev, np.arange(n_events + 1)).astype(np.int64)
    return PxdDigits(offsets, s_out, ucell, vcell, adu.astype(np.uint8)), trk


@dataclass
class SignalSample:
    """Simulated signal tracks of ``n_events`` events, shared by every background scenario.

    Attributes (``n`` tracks):
        event (n,) int64; mass (n,) GeV; charge (n,); p_true (n, 5) perigee parameters; pt (n,) GeV;
        svd (n, 4, 2) measured SVD r*phi, z (mm); pxd_sensor (n, 2) true PXD sensors;
        pxd_true (n, 2, 2) true local (u, v) of the PXD crossings (mm);
        digits: signal PXD digits (contract schema) of the n_events events;
        hit_track (n_hits,) int64 track id of each signal digit; vertex (n, 3) production point (mm);
        group (n,) int64: decay the track belongs to (vertex study), -1 for single tracks.
    """

    n_events: int
    event: np.ndarray
    mass: np.ndarray
    charge: np.ndarray
    p_true: np.ndarray
    pt: np.ndarray
    svd: np.ndarray
    pxd_sensor: np.ndarray
    pxd_true: np.ndarray
    digits: PxdDigits
    hit_track: np.ndarray
    vertex: np.ndarray
    group: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def n_tracks(self) -> int:
        return len(self.event)


def build_signal(vertex, mom, charge, mass, event, n_events: int, rng: np.random.Generator, cfg: TrackingConfig,
                 group=None) -> SignalSample:
    """Simulate given tracks (see :func:`simulate_tracks`) and their PXD digits; tracks outside the
    acceptance are dropped (with their ``group`` partners when ``group`` is given)."""
    sim = simulate_tracks(vertex, mom, charge, mass, rng, cfg)
    keep = sim["accepted"]
    if group is not None:
        bad_groups = np.unique(group[~keep])
        keep &= ~np.isin(group, bad_groups)
    idx = np.flatnonzero(keep)
    n = len(idx)
    sens = sim["pxd_sensor"][idx]
    st = sim["pxd_state"][idx]
    ev = np.asarray(event)[idx]
    cross_ev = np.repeat(ev, 2)
    cross_sen = sens.reshape(-1)
    cross_st = st.reshape(-1, 6)
    cross_trk = np.repeat(np.arange(n), 2)
    digits, hit_track = pxd_signal_digits(cross_ev, cross_sen, cross_st, cross_trk, n_events, rng, cfg)
    pxd_true = _local_on_sensor(cross_st, cross_sen).reshape(n, 2, 2)
    pt = np.hypot(mom[idx, 0], mom[idx, 1])
    return SignalSample(n_events, ev, mass[idx], charge[idx], sim["p_true"][idx], pt, sim["svd"][idx], sens, pxd_true,
                        digits, hit_track, vertex[idx], np.asarray(group)[idx] if group is not None else np.full(n, -1, np.int64))


def simulate_signal(n_events: int, seed: int, config: TrackingConfig | None = None, *, tracks_per_event: int = 12) -> SignalSample:
    """Y(4S)-like tracks, ``tracks_per_event`` per event (before the acceptance), from the beam spot.

    All randomness comes from ``stream_rng(seed, "validation.tracks")``: same (seed, n_events,
    tracks_per_event, config) -> identical sample.
    """
    from b2bkg.core.seeding import stream_rng

    cfg = config or TrackingConfig()
    if n_events < 1 or tracks_per_event < 1:
        raise ConfigError(f"events: {n_events} and tracks_per_event: {tracks_per_event} must be >= 1")
    rng = stream_rng(seed, "validation.tracks")
    n = n_events * tracks_per_event
    t = sample_y4s_tracks(n, rng, cfg)
    vertex = rng.standard_normal((n, 3)) * np.asarray(cfg.beam_spot_sigma_mm)
    mom = np.stack([t["px"], t["py"], t["pz"]], axis=1)
    event = np.arange(n, dtype=np.int64) // tracks_per_event
    return build_signal(vertex, mom, t["charge"], t["mass"], event, n_events, rng, cfg)


# ----------------------------------------------------------------------------------------------
# clusters and track finding
# ----------------------------------------------------------------------------------------------
_V_CENTRES = None


def _v_centres() -> np.ndarray:
    global _V_CENTRES
    if _V_CENTRES is None:
        s = np.repeat(np.arange(geo.N_SENSORS), geo.N_VCELLS)
        v = np.tile(np.arange(geo.N_VCELLS), geo.N_SENSORS)
        _V_CENTRES = geo.pixel_to_local(s, np.zeros_like(v), v)[1].reshape(geo.N_SENSORS, geo.N_VCELLS)
    return _V_CENTRES


def cluster_table(digits: PxdDigits, hit_track: np.ndarray | None, cfg: TrackingConfig) -> dict[str, np.ndarray]:
    """Cluster the digits and turn clusters into measurements.

    Args:
        digits: PXD digits (signal, background or overlaid).
        hit_track: track id of every hit (-1 background), shape (n_hits,), or None (all background).

    Returns:
        dict (m clusters, ordered by event, sensor): ``event``, ``sensor``, ``key`` (event*40+sensor),
        ``u``, ``v`` local centre of gravity (mm), ``su``, ``sv`` position errors (mm), ``track``
        (track id of the cluster's signal pixels, -1 pure background), ``size``.
    """
    from b2bkg.pxd.clusters import find_clusters

    cl = find_clusters(digits)
    sensor = cl.sensor.astype(np.int64)
    u = (cl.u_cog + 0.5) * geo.U_PITCH_MM - 0.5 * geo.SENSOR_WIDTH_MM
    vt = _v_centres()
    i0 = np.clip(np.floor(cl.v_cog).astype(np.int64), 0, geo.N_VCELLS - 2)
    f = cl.v_cog - i0
    v = vt[sensor, i0] * (1 - f) + vt[sensor, i0 + 1] * f
    pitch_v = geo.v_pitch_mm(sensor, np.clip(np.rint(cl.v_cog).astype(np.int64), 0, geo.N_VCELLS - 1))
    fac = np.asarray(cfg.cluster_error_factor)
    su = fac[np.minimum(cl.u_extent, 3) - 1] * geo.U_PITCH_MM / np.sqrt(12)
    sv = fac[np.minimum(cl.v_extent, 3) - 1] * pitch_v / np.sqrt(12)
    trk = np.full(cl.n_clusters, -1, np.int64)
    if hit_track is not None and len(hit_track):
        np.maximum.at(trk, cl.hit_cluster, hit_track)
    return {"event": cl.event, "sensor": sensor, "key": cl.event * geo.N_SENSORS + sensor, "u": u, "v": v,
            "su": su, "sv": sv, "track": trk, "size": cl.size}


def _attach(track_ids: np.ndarray, event: np.ndarray, sensor: np.ndarray, pred: np.ndarray, pcov: np.ndarray,
            cl: dict[str, np.ndarray], window_chi2: float) -> np.ndarray:
    """Best cluster (smallest chi2 below ``window_chi2``) on the predicted sensor of each track.

    Args: track ids (n,), event (n,), predicted sensor (n,) (-1: none), predicted local u, v
    (n, 2) and its covariance (n, 2, 2); cluster table. Returns the cluster index (n,), -1 if none.
    """
    n = len(track_ids)
    key = event * geo.N_SENSORS + sensor
    lo = np.searchsorted(cl["key"], key, "left")
    hi = np.searchsorted(cl["key"], key, "right")
    cnt = np.where(sensor >= 0, hi - lo, 0)
    out = np.full(n, -1, np.int64)
    tot = int(cnt.sum())
    if tot == 0:
        return out
    ti = np.repeat(np.arange(n), cnt)
    ci = lo[ti] + np.arange(tot) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    du = cl["u"][ci] - pred[ti, 0]
    dv = cl["v"][ci] - pred[ti, 1]
    a = pcov[ti, 0, 0] + cl["su"][ci] ** 2
    b = pcov[ti, 0, 1]
    d = pcov[ti, 1, 1] + cl["sv"][ci] ** 2
    det = a * d - b * b
    chi2 = (d * du * du - 2 * b * du * dv + a * dv * dv) / det
    good = chi2 < window_chi2
    ti, ci, chi2 = ti[good], ci[good], chi2[good]
    if len(ti) == 0:
        return out
    o = np.lexsort((chi2, ti))
    ti, ci = ti[o], ci[o]
    first = np.r_[True, ti[1:] != ti[:-1]]
    out[ti[first]] = ci[first]
    return out


@dataclass
class TrackResults:
    """Reconstructed tracks of one scenario (``n`` signal tracks).

    Attributes:
        p (n, 5) fitted perigee parameters; cov (n, 5, 5); pulls (n, 5) (fit - truth) / error;
        residuals (n, 5) fit - truth; ok (n,) fit converged; pt (n,) true pT (GeV);
        attached (n, 2) a PXD cluster attached on layer 1 / 2; wrong (n, 2) the attached cluster
        is not the track's own; chi2 (n,), ndf (n,).
    """

    p: np.ndarray
    cov: np.ndarray
    pulls: np.ndarray
    residuals: np.ndarray
    ok: np.ndarray
    pt: np.ndarray
    attached: np.ndarray
    wrong: np.ndarray
    chi2: np.ndarray
    ndf: np.ndarray


def predict_layer(fit: dict, layer: int, mass, cfg: TrackingConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sensor (n,), local (u, v) (n, 2) in mm and their covariance (n, 2, 2) of the crossing of PXD
    ``layer`` (1 or 2) predicted by a helix ``fit`` (dict with "p" (n, 5), "cov" (n, 5, 5), "ok" (n,));
    sensor -1 where the fit failed."""
    p, C = fit["p"], fit["cov"]
    n = len(p)
    tr = trajectory(p, cfg)
    sens = tr["sensors"][:, layer - 1]
    steps = np.array([1e-4, 1e-4, 1e-6, 0.0, 1e-6])
    h_om = 1e-6 * np.abs(p[:, 3])
    pp = np.repeat(p[None], 5, axis=0)
    for j in range(5):
        pp[j, :, j] += h_om if j == 3 else steps[j]
    sens5 = np.tile(tr["sensors"], (5, 1))
    tr5 = trajectory(pp.reshape(-1, 5), cfg, sensors=sens5)
    loc0 = tr["loc"][:, layer]
    J = np.empty((n, 2, 5))
    locs = tr5["loc"].reshape(5, n, N_SURF, 2)[:, :, layer]
    for j in range(5):
        J[:, :, j] = (locs[j] - loc0) / (h_om[:, None] if j == 3 else steps[j])
    P = np.einsum("nij,njk,nlk->nil", J, C, J)
    bad = ~fit["ok"] | ~np.isfinite(P).all(axis=(1, 2))
    sens = np.where(bad, -1, sens)
    return sens, loc0, np.where(np.isfinite(P), P, 0.0)


def reconstruct(signal: SignalSample, background: PxdDigits | None, config: TrackingConfig | None = None) -> TrackResults:
    """Overlay ``background`` (None: no PXD background) onto the signal digits, cluster, find and fit.

    Args:
        signal: from :func:`simulate_signal` (or :func:`build_signal`).
        background: PXD digits with ``signal.n_events`` events, or None.

    Returns:
        :class:`TrackResults` for every signal track.
    """
    from b2bkg.overlay.pxd import overlay_pxd

    cfg = config or TrackingConfig()
    n = signal.n_tracks
    if background is None:
        merged, hit_track = signal.digits, signal.hit_track
    else:
        if background.n_events < signal.n_events:
            raise ConfigError(f"background: {background.n_events} events for {signal.n_events} signal events")
        if background.n_events > signal.n_events:
            background = background.slice(0, signal.n_events)
        merged, sig_hit = overlay_pxd(signal.digits, background, return_signal_hit=True)
        hit_track = np.where(sig_hit >= 0, signal.hit_track[np.maximum(sig_hit, 0)], -1)
    cl = cluster_table(merged, hit_track, cfg)
    mass = signal.mass
    tid = np.arange(n)
    meas = np.zeros((n, 6, 2))
    sig = np.full((n, 6, 2), np.inf)
    meas[:, 2:] = signal.svd
    sig[:, 2:, 0] = np.asarray(cfg.svd_sigma_u_um) * 1e-3
    sig[:, 2:, 1] = np.asarray(cfg.svd_sigma_v_um) * 1e-3
    p0 = seed_from_svd(meas, cfg)
    sensors = trajectory(p0, cfg)["sensors"]
    fit = fit_helix(p0, meas, sig, sensors, mass, cfg, kink_surfaces=(2, 3, 4, 5), n_iter=cfg.fit_iterations + 1)
    attached = np.full((n, 2), -1, np.int64)
    for layer, kinks in ((2, (1, 2, 3, 4, 5)), (1, (0, 1, 2, 3, 4, 5))):
        sens, pred, P = predict_layer(fit, layer, mass, cfg)
        c = _attach(tid, signal.event, sens, pred, P, cl, cfg.window_chi2)
        attached[:, layer - 1] = c
        has = c >= 0
        sensors = trajectory(fit["p"], cfg)["sensors"]
        sensors[:, layer - 1] = np.where(has, cl["sensor"][np.maximum(c, 0)], sensors[:, layer - 1])
        if layer == 1:
            # keep the layer-2 sensor of the attached cluster
            c2 = attached[:, 1]
            sensors[:, 1] = np.where(c2 >= 0, cl["sensor"][np.maximum(c2, 0)], sensors[:, 1])
        li = layer - 1
        meas[:, li, 0] = np.where(has, cl["u"][np.maximum(c, 0)], 0.0)
        meas[:, li, 1] = np.where(has, cl["v"][np.maximum(c, 0)], 0.0)
        sig[:, li, 0] = np.where(has, cl["su"][np.maximum(c, 0)], np.inf)
        sig[:, li, 1] = np.where(has, cl["sv"][np.maximum(c, 0)], np.inf)
        fit = fit_helix(fit["p"], meas, sig, sensors, mass, cfg, kink_surfaces=kinks)
    has = attached >= 0
    wrong = has & (cl["track"][np.maximum(attached, 0)] != tid[:, None])
    err = np.sqrt(np.maximum(np.diagonal(fit["cov"], axis1=1, axis2=2), 1e-30))
    res = fit["p"] - signal.p_true
    res[:, 2] = _wrap(res[:, 2])
    pulls = res / err
    ok = fit["ok"] & np.isfinite(pulls).all(axis=1)
    return TrackResults(fit["p"], fit["cov"], pulls, res, ok, signal.pt, has, wrong, fit["chi2"], fit["ndf"])


# ----------------------------------------------------------------------------------------------
# pull widths
# ----------------------------------------------------------------------------------------------
def fit_gaussian_width(x: np.ndarray, *, range_: tuple[float, float] = (-5.0, 5.0), bins: int = 50) -> tuple[float, float, float]:
    """Width of a Gaussian fitted to the histogram of ``x`` (binned Poisson maximum likelihood).

    Returns:
        (sigma, its standard error, mean); NaNs when fewer than 20 entries fall in the range.
    """
    from scipy.optimize import minimize

    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    h, edges = np.histogram(x, bins=bins, range=range_)
    if h.sum() < 20:
        return float("nan"), float("nan"), float("nan")
    from scipy.special import ndtr

    inr = x[(x >= range_[0]) & (x <= range_[1])]
    m0, s0 = float(np.median(inr)), float(1.4826 * np.median(np.abs(inr - np.median(inr))) or inr.std() or 1.0)

    def nll(th):
        a, mu, ls = th
        s = np.exp(ls)
        cdf = ndtr((edges - mu) / s)
        lam = np.exp(a) * np.maximum(np.diff(cdf), 1e-300)
        return float(np.sum(lam - h * np.log(lam)))

    th0 = np.array([np.log(h.sum()), m0, np.log(s0)])
    r = minimize(nll, th0, method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 4000})
    th = r.x
    # standard error from the numerical Hessian of the negative log likelihood
    eps = np.array([1e-3, 1e-3, 1e-3])
    H = np.empty((3, 3))
    for i in range(3):
        for j in range(i, 3):
            ei, ej = np.eye(3)[i] * eps[i], np.eye(3)[j] * eps[j]
            H[i, j] = H[j, i] = (nll(th + ei + ej) - nll(th + ei - ej) - nll(th - ei + ej) + nll(th - ei - ej)) / (4 * eps[i] * eps[j])
    try:
        cov = np.linalg.inv(H)
        err_ls = float(np.sqrt(max(cov[2, 2], 0.0)))
    except np.linalg.LinAlgError:
        err_ls = float("nan")
    s = float(np.exp(th[2]))
    return s, s * err_ls, float(th[1])
