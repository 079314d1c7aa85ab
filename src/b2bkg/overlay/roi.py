"""PXD regions of interest (ROIs): keep, generate and overlay PXD background only around tracks.

Real PXD readout keeps only the pixels inside regions of interest around the intercepts of
tracks extrapolated from the outer detectors (basf2 ``PXDROIFinder``): the ROI of a track on a
sensor is a rectangle centred on the extrapolated intercept (u, v), of full width

    width_u = min(max_width_mm, n_sigma * sqrt(sigma_u^2 + sigma_syst_mm^2))

(likewise in v), ``sigma_u``, ``sigma_v`` the extrapolation errors. basf2's defaults
[src: ``PXDROIFinder`` parameters in basf2 steering files]: ``numSigmaTotU/V = 10``,
``sigmaSystU/V = 0.02 cm``, ``maxWidthU/V = 0.5 cm``; that the width is the *full* width
(the intercept +- width / 2) is [assume].

* :func:`rois_from_tracks`: ROIs of the signal tracks of a :class:`b2bkg.validation.tracking.SignalSample`
  from the SVD-only helix fit (the same seeding and extrapolation as the track finding).
* :func:`rois_from_particles`: ROIs of the charged final-state particles of an ``smc`` group
  (their SVD hits simulated with the fast tracking, then as above).
* :func:`rois_from_digits`: ROIs around the signal's own PXD clusters (a file without particles),
  of the width of ``fallback_sigma_mm``.
* :func:`in_roi` / :func:`filter_digits`: which digits lie inside an ROI of their event and sensor
  (the post-filter, exact for any background source).
* :func:`sample_fast_roi`: ROI *sampling* for ``pxd-fast``: the event's cluster counts, positions
  and shapes are drawn as the full sampler draws them (cheap alias look-ups over the 40 x K
  count vector), then only the clusters whose bounding box touches an ROI get pixel patterns,
  charges and assembly (the costly stages), and only pixels inside ROIs are kept. The result
  has, inside the ROIs, the distribution of the full event (clusters straddling an ROI edge
  included, charges of overlapping clusters added); outside it is empty.

Example:
    >>> from b2bkg.io import PxdDigits
    >>> r = Rois(1, event=[0], sensor=[3], umin=[10], umax=[20], vmin=[100], vmax=[150])
    >>> d = PxdDigits([0, 2], sensor=[3, 3], ucell=[15, 40], vcell=[120, 120], charge=[30, 30])
    >>> in_roi(d, r).tolist()
    [True, False]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits

__all__ = ["RoiConfig", "Rois", "rois_from_prediction", "rois_from_tracks", "rois_from_particles", "rois_from_digits",
           "rois_for_signal_file", "in_roi", "filter_digits", "sample_fast_roi", "RoiBackground"]


@dataclass(frozen=True)
class RoiConfig:
    """ROI size (basf2 ``PXDROIFinder`` defaults, converted to mm).

    Attributes:
        n_sigma: full width in units of the total (extrapolation + systematic) error.
        sigma_syst_mm: systematic error added in quadrature (u and v).
        max_width_mm: largest full width (u and v).
        fallback_sigma_mm: extrapolation error assumed by :func:`rois_from_digits` (no tracks known).
    """

    n_sigma: float = 10.0
    sigma_syst_mm: float = 0.2
    max_width_mm: float = 5.0
    fallback_sigma_mm: float = 0.3

    def __post_init__(self):
        check_range("n_sigma", self.n_sigma, 0.1, 100.0)
        check_range("sigma_syst_mm", self.sigma_syst_mm, 0.0, 50.0, "mm")
        check_range("max_width_mm", self.max_width_mm, 0.01, 100.0, "mm")
        check_range("fallback_sigma_mm", self.fallback_sigma_mm, 0.0, 50.0, "mm")


@dataclass
class Rois:
    """Rectangles of pixels, inclusive bounds, ``m`` ROIs sorted by (event, sensor).

    Attributes:
        n_events: events the ROIs belong to.
        event, sensor, umin, umax, vmin, vmax: shape (m,), int64.
    """

    n_events: int
    event: np.ndarray
    sensor: np.ndarray
    umin: np.ndarray
    umax: np.ndarray
    vmin: np.ndarray
    vmax: np.ndarray

    def __post_init__(self):
        cols = [np.asarray(getattr(self, k), np.int64).reshape(-1) for k in ("event", "sensor", "umin", "umax", "vmin", "vmax")]
        if len({len(c) for c in cols}) != 1:
            raise ConfigError("Rois: event, sensor, umin, umax, vmin, vmax must have the same length")
        o = np.lexsort((cols[1], cols[0]))
        self.event, self.sensor, self.umin, self.umax, self.vmin, self.vmax = (c[o] for c in cols)
        if len(o) and (self.event.min() < 0 or self.event.max() >= self.n_events or self.sensor.min() < 0
                       or self.sensor.max() >= N_SENSORS):
            raise ConfigError(f"Rois: event or sensor index out of range (n_events={self.n_events}, 40 sensors)")

    @property
    def n_rois(self) -> int:
        return len(self.event)

    @property
    def key(self) -> np.ndarray:
        """``event * 40 + sensor`` of each ROI, sorted."""
        return self.event * N_SENSORS + self.sensor

    def for_event(self, i: int) -> dict[str, np.ndarray]:
        """The ROIs of event ``i``: dict of ``sensor``, ``umin``, ``umax``, ``vmin``, ``vmax``."""
        a, b = np.searchsorted(self.event, [i, i + 1])
        return {k: getattr(self, k)[a:b] for k in ("sensor", "umin", "umax", "vmin", "vmax")}

    def slice(self, start: int, stop: int) -> Rois:
        """ROIs of events ``start .. stop-1``, renumbered from 0."""
        a, b = np.searchsorted(self.event, [start, stop])
        return Rois(stop - start, self.event[a:b] - start, self.sensor[a:b], self.umin[a:b], self.umax[a:b],
                    self.vmin[a:b], self.vmax[a:b])

    def covered_pixels(self) -> np.ndarray:
        """Pixels inside at least one ROI, per event (the union), shape (n_events,), int64.

        Per pixel column (event, sensor, u) the v intervals of the ROIs are merged (sort + running
        maximum of the interval ends), so overlapping ROIs count once.
        """
        out = np.zeros(self.n_events, np.int64)
        if self.n_rois == 0:
            return out
        nu = self.umax - self.umin + 1
        ri = np.repeat(np.arange(self.n_rois), nu)
        col = (self.key[ri] * N_UCELLS + self.umin[ri] + np.arange(int(nu.sum())) - np.repeat(np.cumsum(nu) - nu, nu))
        start, end = self.vmin[ri], self.vmax[ri]
        o = np.lexsort((start, col))
        col, start, end = col[o], start[o], end[o]
        span = N_VCELLS + 2
        run = np.maximum.accumulate(col * span + end + 1)  # running max of the ends, monotone over columns
        prev = np.r_[-1, run[:-1]]
        same = np.r_[False, col[1:] == col[:-1]]
        prev_end = np.where(same, prev - col * span - 1, -1)
        covered = np.maximum(0, end - np.maximum(start, prev_end + 1) + 1)
        return np.bincount(col // (N_SENSORS * N_UCELLS), covered, minlength=self.n_events).astype(np.int64)

    def area_fraction(self) -> float:
        """Mean fraction of the 40 x 250 x 768 pixels inside ROIs."""
        return float(self.covered_pixels().mean() / (N_SENSORS * N_UCELLS * N_VCELLS)) if self.n_events else 0.0


# ----------------------------------------------------------------------------------------------
# ROI finding
# ----------------------------------------------------------------------------------------------
def rois_from_prediction(event: np.ndarray, sensor: np.ndarray, uv_mm: np.ndarray, cov_mm2: np.ndarray, n_events: int,
                         config: RoiConfig | None = None) -> Rois:
    """ROIs around extrapolated intercepts.

    Args:
        event: (n,) event of each intercept; sensor: (n,) sensor index (-1: none, skipped).
        uv_mm: (n, 2) local intercept (u, v), mm; cov_mm2: (n, 2, 2) its covariance, mm^2.
    Returns:
        :class:`Rois` (rectangles clipped to the sensor; intercepts whose rectangle misses the
        sensor give none).
    """
    from b2bkg.pxd import geometry as geo

    cfg = config or RoiConfig()
    event, sensor = np.asarray(event, np.int64), np.asarray(sensor, np.int64)
    uv, cov = np.asarray(uv_mm, np.float64), np.asarray(cov_mm2, np.float64)
    ok = (sensor >= 0) & np.isfinite(uv).all(1) & np.isfinite(cov).all((1, 2))
    event, sensor, uv, cov = event[ok], sensor[ok], uv[ok], cov[ok]
    sig = np.sqrt(np.maximum(np.stack([cov[:, 0, 0], cov[:, 1, 1]], 1), 0.0))
    half = 0.5 * np.minimum(cfg.max_width_mm, cfg.n_sigma * np.hypot(sig, cfg.sigma_syst_mm))  # (n, 2)
    hw_u, hl_v = 0.5 * geo.SENSOR_WIDTH_MM, 0.5 * geo.ACTIVE_LENGTH_MM[sensor]
    lo_u, hi_u = uv[:, 0] - half[:, 0], uv[:, 0] + half[:, 0]
    lo_v, hi_v = uv[:, 1] - half[:, 1], uv[:, 1] + half[:, 1]
    hit = (hi_u > -hw_u) & (lo_u < hw_u) & (hi_v > -hl_v) & (lo_v < hl_v)
    eps = 1e-6
    cu = lambda x: np.clip(x, -hw_u + eps, hw_u - eps)  # noqa: E731
    cv = lambda x: np.clip(x, -hl_v + eps, hl_v - eps)  # noqa: E731
    u0, va = geo.local_to_pixel(sensor, cu(lo_u), cv(lo_v))
    u1, vb = geo.local_to_pixel(sensor, cu(hi_u), cv(hi_v))
    m = hit & (u0 >= 0) & (u1 >= 0) & (va >= 0) & (vb >= 0)
    # v may run either way along the sensor (finer rows at one end): order the bounds
    return Rois(int(n_events), event[m], sensor[m], np.minimum(u0, u1)[m], np.maximum(u0, u1)[m],
                np.minimum(va, vb)[m], np.maximum(va, vb)[m])


def rois_from_tracks(signal, tracking_config=None, config: RoiConfig | None = None) -> Rois:
    """ROIs of the tracks of a :class:`b2bkg.validation.tracking.SignalSample` on both PXD layers,
    from the SVD-only helix fit (seeding and extrapolation of :func:`b2bkg.validation.tracking.reconstruct`)."""
    from b2bkg.validation import tracking as trk

    tcfg = tracking_config or trk.TrackingConfig()
    n = signal.n_tracks
    if n == 0:
        return Rois(signal.n_events, *([np.zeros(0, np.int64)] * 6))
    meas = np.zeros((n, 6, 2))
    sig = np.full((n, 6, 2), np.inf)
    meas[:, 2:] = signal.svd
    sig[:, 2:, 0] = np.asarray(tcfg.svd_sigma_u_um) * 1e-3
    sig[:, 2:, 1] = np.asarray(tcfg.svd_sigma_v_um) * 1e-3
    p0 = trk.seed_from_svd(meas, tcfg)
    sensors = trk.trajectory(p0, tcfg)["sensors"]
    fit = trk.fit_helix(p0, meas, sig, sensors, signal.mass, tcfg, kink_surfaces=(2, 3, 4, 5), n_iter=tcfg.fit_iterations + 1)
    from b2bkg.pxd import geometry as geo

    lp = geo.ladder_planes()
    st0 = trk.perigee_to_state(fit["p"])
    ev, se, uv, cv = [], [], [], []
    for layer in (1, 2):
        s, pred, P = trk.predict_layer(fit, layer, signal.mass, tcfg)
        ev.append(signal.event)
        se.append(s)
        uv.append(pred)
        cv.append(P)
        # intercepts with the other sensors of the layer (windmill overlaps, the .1/.2 joint): an
        # ROI wherever the rectangle reaches a sensor, as PXDROIFinder intercepts every sensor
        # within its tolerance; the covariance of the main intercept is used for them
        r_layer = geo.LADDER_RADIUS_MM[layer]
        for j in np.flatnonzero(lp["layer"] == layer):  # 8 / 12 ladder planes (geometry, not tracks)
            new, path = trk.propagate_to_plane(st0, lp["phi"][j], lp["radius"][j])
            near = np.isfinite(path) & (path < 2.0 * r_layer) & (s >= 0)  # first passage only
            for sensor in (lp["sensor1"][j], lp["sensor1"][j] + 1):
                m = near & (s != sensor)
                u, v, _ = geo.global_to_local(np.full(int(m.sum()), sensor), new[m, 0], new[m, 1], new[m, 2])
                ev.append(signal.event[m])
                se.append(np.full(int(m.sum()), sensor))
                uv.append(np.stack([u, v], 1))
                cv.append(P[m])
    return rois_from_prediction(np.concatenate(ev), np.concatenate(se), np.concatenate(uv), np.concatenate(cv),
                                signal.n_events, config)


_CHARGED_FINAL = {11: 0.000511, 13: 0.10566, 211: 0.13957, 321: 0.493677, 2212: 0.938272}


def rois_from_particles(smc, seed: int, tracking_config=None, config: RoiConfig | None = None) -> Rois:
    """ROIs of the charged final-state particles (e, mu, pi, K, p without daughters) of an ``smc`` group.

    Their SVD hits are simulated with the fast tracking (material, resolution; randomness from
    ``stream_rng(seed, "overlay.roi")``), then seeded and extrapolated as in :func:`rois_from_tracks`.
    """
    from b2bkg.core.seeding import stream_rng
    from b2bkg.validation import tracking as trk

    tcfg = tracking_config or trk.TrackingConfig()
    p = smc.particles
    pdg = np.asarray(p["pdg"], np.int64)
    n_ev = smc.n_events
    ev = np.repeat(np.arange(n_ev), np.diff(smc.offsets))
    start = np.asarray(smc.offsets[:-1], np.int64)[ev]
    mother = np.asarray(p["mother"], np.int64)
    has_child = np.zeros(len(pdg), bool)
    mi = np.flatnonzero(mother >= 0)
    has_child[start[mi] + mother[mi]] = True
    absid = np.abs(pdg)
    mass = np.array([_CHARGED_FINAL.get(int(a), np.nan) for a in absid]) if len(pdg) else np.zeros(0)
    sel = np.isfinite(mass) & ~has_child
    mom = np.stack([p["px"], p["py"], p["pz"]], 1).astype(np.float64)[sel]
    vtx = np.stack([p["vx"], p["vy"], p["vz"]], 1).astype(np.float64)[sel] * 10.0  # cm -> mm
    charge = np.where(np.isin(absid[sel], [11, 13]), -np.sign(pdg[sel]), np.sign(pdg[sel])).astype(np.float64)
    pt = np.hypot(mom[:, 0], mom[:, 1])
    keep = (pt >= tcfg.pt_min_gev) & (np.hypot(vtx[:, 0], vtx[:, 1]) < tcfg.beam_pipe_radius_mm)
    if not keep.any():
        return Rois(n_ev, *([np.zeros(0, np.int64)] * 6))
    rng = stream_rng(seed, "overlay.roi")
    sigsample = trk.build_signal(vtx[keep], mom[keep], charge[keep], mass[sel][keep], ev[sel][keep], n_ev, rng, tcfg)
    return rois_from_tracks(sigsample, tcfg, config)


def rois_from_digits(digits: PxdDigits, config: RoiConfig | None = None) -> Rois:
    """ROIs centred on every cluster of ``digits`` (the signal's own PXD hits: where the tracks
    cross), of the width of ``fallback_sigma_mm`` (no extrapolation error is known)."""
    from b2bkg.pxd import geometry as geo
    from b2bkg.pxd.clusters import find_clusters

    cfg = config or RoiConfig()
    cl = find_clusters(digits)
    s = cl.sensor.astype(np.int64)
    u = (cl.u_cog + 0.5) * geo.U_PITCH_MM - 0.5 * geo.SENSOR_WIDTH_MM
    v = geo.pixel_to_local(s, np.zeros_like(s), np.clip(np.rint(cl.v_cog).astype(np.int64), 0, N_VCELLS - 1))[1]
    cov = np.zeros((cl.n_clusters, 2, 2))
    cov[:, 0, 0] = cov[:, 1, 1] = cfg.fallback_sigma_mm**2
    return rois_from_prediction(cl.event, s, np.stack([u, v], 1), cov, digits.n_events, cfg)


def rois_for_signal_file(reader, seed: int, config: RoiConfig | None = None) -> tuple[Rois, str]:
    """ROIs of every event of an open signal file: from its ``smc`` particles when it has them,
    otherwise from its own PXD clusters. Returns (Rois, a one-word source: "particles" | "signal-clusters")."""
    if reader.has("smc"):
        return rois_from_particles(reader.read("smc", 0, reader.n_events), seed, config=config), "particles"
    if reader.has("pxd"):
        return rois_from_digits(reader.read("pxd", 0, reader.n_events), config), "signal-clusters"
    raise ConfigError("--roi: the signal file has neither smc particles nor pxd digits to find regions of interest from")


# ----------------------------------------------------------------------------------------------
# filtering
# ----------------------------------------------------------------------------------------------
def _inside(key: np.ndarray, u: np.ndarray, v: np.ndarray, rois: Rois) -> np.ndarray:
    """Whether points (key = event * 40 + sensor, u, v) lie in an ROI with the same key; (n,) bool."""
    rk = rois.key
    lo = np.searchsorted(rk, key, "left")
    cnt = np.searchsorted(rk, key, "right") - lo
    out = np.zeros(len(key), bool)
    tot = int(cnt.sum())
    if tot == 0:
        return out
    hi_ = np.flatnonzero(cnt)
    pi = np.repeat(hi_, cnt[hi_])
    ri = lo[pi] + np.arange(tot) - np.repeat(np.cumsum(cnt[hi_]) - cnt[hi_], cnt[hi_])
    ok = (u[pi] >= rois.umin[ri]) & (u[pi] <= rois.umax[ri]) & (v[pi] >= rois.vmin[ri]) & (v[pi] <= rois.vmax[ri])
    out[pi[ok]] = True
    return out


def in_roi(digits: PxdDigits, rois: Rois) -> np.ndarray:
    """Whether each digit lies inside an ROI of its event and sensor, shape (n_hits,), bool."""
    if digits.n_events != rois.n_events:
        raise ConfigError(f"ROIs of {rois.n_events} events for {digits.n_events} events of digits")
    key = digits.event_index().astype(np.int64) * N_SENSORS + digits.sensor
    return _inside(key, digits.ucell.astype(np.int64), digits.vcell.astype(np.int64), rois)


def filter_digits(digits: PxdDigits, rois: Rois) -> PxdDigits:
    """The digits inside the ROIs (the ROI readout of a full event)."""
    m = in_roi(digits, rois)
    ev = digits.event_index()[m]
    offsets = np.searchsorted(ev, np.arange(digits.n_events + 1)).astype(np.int64)
    return PxdDigits(offsets, digits.sensor[m], digits.ucell[m], digits.vcell[m], digits.charge[m])


# ----------------------------------------------------------------------------------------------
# ROI sampling of pxd-fast
# ----------------------------------------------------------------------------------------------
def sample_fast_roi(t: dict[str, np.ndarray], cfg, cond: np.ndarray | None, rng: np.random.Generator, roi: dict[str, np.ndarray],
                    hot_pixels: bool = True) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """One ``pxd-fast`` event generated only inside the ROIs ``roi`` (see module docstring).

    Stages (a)-(c) up to the cluster shapes follow :func:`b2bkg.pxd.models.fast.sample_fast_event`
    draw for draw (the sampler's ``cluster_filter`` hook; ``tests/validation/test_roi.py`` checks
    that with ROIs covering every sensor both give identical events); clusters whose box misses
    every ROI are dropped before their pixels are built, and pixels outside the ROIs before assembly.

    Args:
        t, cfg: the model's tables and config (:meth:`FastPxdModel.tables`, ``FastConfig``).
        cond: beam conditions (6,) or None (drawn from the learned density).
        rng: the event's generator.
        roi: the event's ROIs (:meth:`Rois.for_event`): ``sensor``, ``umin``, ``umax``, ``vmin``, ``vmax``.
    Returns:
        (digits dict as ``sample_fast_event`` returns, inside the ROIs only;
        counts ``{"clusters": all drawn, "clusters_built": kept, "pixels_built": pixels built}``).
    """
    from b2bkg.pxd.models.fast import sample_fast_event

    rs = np.asarray(roi["sensor"], np.int64)
    o = np.argsort(rs, kind="stable")
    rs = rs[o]
    umin, umax, vmin, vmax = (np.asarray(roi[k])[o] for k in ("umin", "umax", "vmin", "vmax"))

    def touches(sensor, u0, v0, w, h):
        """Cluster boxes [u0, u0+w-1] x [v0, v0+h-1] that overlap an ROI of their sensor."""
        lo = np.searchsorted(rs, sensor, "left")
        cnt = np.searchsorted(rs, sensor, "right") - lo
        keep = np.zeros(len(sensor), bool)
        has = np.flatnonzero(cnt)
        if len(has):
            ci_ = np.repeat(has, cnt[has])
            ri = lo[ci_] + np.arange(len(ci_)) - np.repeat(np.cumsum(cnt[has]) - cnt[has], cnt[has])
            hit = ((u0[ci_] <= umax[ri]) & (u0[ci_] + w[ci_] - 1 >= umin[ri])
                   & (v0[ci_] <= vmax[ri]) & (v0[ci_] + h[ci_] - 1 >= vmin[ri]))
            keep[ci_[hit]] = True
        return keep

    one = Rois(1, np.zeros(len(rs), np.int64), rs, umin, umax, vmin, vmax)
    stats: dict = {}
    d = sample_fast_event(t, cfg, cond, rng, hot_pixels, cluster_filter=touches, stats=stats,
                          pixel_filter=lambda s_, u_, v_: _inside(s_.astype(np.int64), u_.astype(np.int64), v_.astype(np.int64), one))
    return d, stats


class RoiBackground:
    """PXD background of signal events inside their ROIs, from a background source of
    :mod:`b2bkg.overlay.background`: a ``pxd-fast`` run folder is *sampled* inside the ROIs
    (:func:`sample_fast_roi`, same per-event streams as the full sampler); any other source is
    read in full and post-filtered (:func:`filter_digits`).

    Attributes:
        mode: "roi-sampling" or "post-filter".
        counts: accumulated cluster / pixel counts of ROI sampling (empty for the post-filter).
    """

    def __init__(self, source, rois: Rois):
        self.source, self.rois = source, rois
        fam = getattr(getattr(source, "run", None), "family", None)
        self.mode = "roi-sampling" if getattr(fam, "name", None) == "pxd-fast" else "post-filter"
        self.counts: dict[str, int] = {}

    def read(self, start: int, stop: int) -> PxdDigits:
        """Background digits of signal events ``start .. stop-1``, inside the ROIs only."""
        if self.mode == "post-filter":
            return filter_digits(self.source.read("pxd", start, stop), self.rois.slice(start, stop))
        return self._sample(start, stop)

    def _sample(self, start: int, stop: int) -> PxdDigits:
        from b2bkg.core.seeding import event_rng
        from b2bkg.pxd.models.fast import SAMPLE_DOMAIN

        src = self.source
        t = src.run.modules["model"].tables()
        cfg = src.run.cfg
        conds = None
        if src._cond is not None:
            # as ModelBackground hands them to the sampler: float32 Conditions, read back as float64
            conds = np.stack([src._cond.get(int(e), event_rng(src.seed, "generate.conditions", int(e)))
                              for e in range(start, stop)]).astype(np.float32).astype(np.float64)
        evs = []
        for i, e in enumerate(range(start, stop)):
            d, c = sample_fast_roi(t, cfg, None if conds is None else conds[i], event_rng(src.seed, SAMPLE_DOMAIN, e),
                                   self.rois.for_event(e))
            evs.append(d)
            for k2, v in c.items():
                self.counts[k2] = self.counts.get(k2, 0) + v
        return PxdDigits.from_events(evs)
