"""ECL cluster physics with no / true / generated ECL background (seed 004's checks).

The chain, vectorized over events and crystals:

1. **Photons** (:func:`simulate_photons`): ``photons_per_event`` single photons, log-uniform in
   energy over ``photon_energy_gev`` and uniform in cos(theta) and phi over the ECL acceptance,
   and ``pi0_per_event`` pi0 -> gamma gamma with a B-decay-like momentum (Gamma(k=2) of mean
   ``pi0_p_mean_gev`` in the Y(4S) frame, isotropic, boosted by beta*gamma = 0.284 along +z),
   decaying isotropically; photons outside the acceptance are dropped (with their pi0 partner
   for the mass peak). All come from the IP at the event's signal time.
2. **Showers** (:func:`deposit_showers`): the photon's energy, times a containment drawn around
   ``containment`` with the Belle CsI(Tl) stochastic and constant terms (0.81 % / E^1/4 (+) 1.34 %,
   E in GeV) [assume: the noise term comes from the background], is shared over the basf2 5x5
   window of the crystal it points to with a Moliere-radius-like lateral profile: a 2D
   exponential core (``core_rad``) plus a halo (``halo_fraction``, ``halo_rad``) evaluated at the
   crystal centres, each crystal's share fluctuated by a Gamma(4, 1/4) factor.
3. **Waveforms** (:func:`signal_waveforms`): every crystal's energy through the pulse template
   (:class:`b2bkg.ecl.pulse.PulseShape`) at the event's signal time, 20 ADC/MeV, no pedestal, int32;
   overlaid with :func:`b2bkg.overlay.ecl.overlay_ecl` on the scenario's background.
4. **Fit** (:func:`fit_crystals`): amplitude and time with the pillar's template fit
   (:func:`b2bkg.ecl.fit.fit_waveforms`), run only on crystals whose fit could reach
   ``crystal_mev``: by Cauchy-Schwarz the fitted amplitude is at most
   ``|S - mean S| / min_j |T_j - mean T_j|``, so skipping the others changes no result above the
   crystal threshold. Seed crystals are refitted on a 0.01-tick time grid for the cluster time.
5. **Clusters** (:func:`find_clusters`): seeds as the pillar's selection finds them
   (:func:`b2bkg.ecl.select.find_seeds`: E > 10 MeV and the maximum of its 5x5 window); a cluster
   is the seed's 5x5 window, crystals above ``crystal_mev``, a crystal in two windows going to the
   nearer seed; energy = sum, direction = energy-weighted centroid, time = the seed's fine fit.
6. **Physics** (:func:`summarize`): photons are matched to the nearest cluster within
   ``match_rad``; the energy resolution is the core Gaussian width of E_cluster / E_true - 1 of
   single photons, the time resolution that of t_cluster - t_true (ns), the pi0 mass from the two
   matched clusters of a pi0 (core Gaussian mean and width), and E_extra the per-event sum of the
   energies of clusters matched to no signal photon. Each number comes with its statistical error.

Example:
    >>> ph = simulate_photons(2, seed=1)
    >>> res = run_ecl_scenarios(ph, {"none": None})
    >>> res["none"]["e_extra_mean_gev"], res["none"]["n_single_photons"]
    (0.0, 8)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError
from b2bkg.ecl.geometry import N_CRYSTALS, RING_THETA_DEG, crystal_phi, crystal_theta, neighbour_table
from b2bkg.ecl.pulse import N_SAMPLES, TICK_US, PulseShape

__all__ = [
    "EclValidationConfig", "PhotonSample", "ClusterTable", "simulate_photons", "deposit_showers", "signal_waveforms",
    "fit_crystals", "find_clusters", "match_photons", "summarize", "run_ecl_scenarios", "fit_core_gaussian",
    "PI0_MASS_GEV", "ECL_KEYS", "ENERGY_BINS_GEV",
]

PI0_MASS_GEV = 0.1349768
Y4S_BETA_GAMMA = 0.2835
ECL_DOMAIN = "validation.ecl"
#: the numbers of every scenario in ``validation.json["ecl"]`` (each with ``*_err``)
#: single-photon energy bins of the resolution breakdown (GeV)
ENERGY_BINS_GEV = {"e_lt_0.2": (0.0, 0.2), "e_0.2_0.5": (0.2, 0.5), "e_gt_0.5": (0.5, np.inf)}
ECL_KEYS = ("energy_resolution", "time_resolution_ns", "pi0_mass_mean_gev", "pi0_mass_width_gev", "e_extra_mean_gev")


@dataclass(frozen=True)
class EclValidationConfig:
    """Signal sample, shower, reconstruction and matching knobs of the ECL validation.

    Angles in radians unless the name says deg; energies in GeV unless it says MeV.
    """

    photons_per_event: int = 4
    pi0_per_event: int = 3
    photon_energy_gev: tuple[float, float] = (0.05, 2.0)
    theta_range_deg: tuple[float, float] = (float(RING_THETA_DEG[0]), float(RING_THETA_DEG[-1]))
    pi0_p_mean_gev: float = 0.5
    pi0_p_max_gev: float = 3.0
    # shower [assume]: lateral profile at the crystal centres, containment in the 5x5 window
    core_rad: float = 0.012
    halo_rad: float = 0.05
    halo_fraction: float = 0.1
    share_gamma_shape: float = 4.0
    containment: float = 0.96
    stochastic_term: float = 0.0081
    constant_term: float = 0.0134
    # signal time: the pulse maximum at this sample (+ per-event jitter)
    signal_peak_tick: float = 12.0
    time_jitter_ns: float = 20.0
    adc_per_mev: float = 20.0
    # reconstruction
    seed_mev: float = 10.0
    crystal_mev: float = 2.0
    match_rad: float = 0.06

    def __post_init__(self):
        check_range("photons_per_event", self.photons_per_event, 0, 1000)
        check_range("pi0_per_event", self.pi0_per_event, 0, 1000)
        lo, hi = self.photon_energy_gev
        if not 0.001 <= lo < hi <= 10.0:
            raise ConfigError(f"photon_energy_gev: {self.photon_energy_gev} must satisfy 0.001 <= lo < hi <= 10 GeV")
        tlo, thi = self.theta_range_deg
        if not 0.0 <= tlo < thi <= 180.0:
            raise ConfigError(f"theta_range_deg: {self.theta_range_deg} must satisfy 0 <= lo < hi <= 180 deg")
        check_range("pi0_p_mean_gev", self.pi0_p_mean_gev, 0.01, 5.0, "GeV")
        check_range("pi0_p_max_gev", self.pi0_p_max_gev, 0.05, 6.0, "GeV")
        check_range("core_rad", self.core_rad, 1e-4, 0.5, "rad")
        check_range("halo_rad", self.halo_rad, 1e-4, 1.0, "rad")
        check_range("halo_fraction", self.halo_fraction, 0.0, 1.0)
        check_range("share_gamma_shape", self.share_gamma_shape, 0.1, 1e6)
        check_range("containment", self.containment, 0.1, 1.0)
        check_range("stochastic_term", self.stochastic_term, 0.0, 0.5)
        check_range("constant_term", self.constant_term, 0.0, 0.5)
        check_range("signal_peak_tick", self.signal_peak_tick, 3.0, 27.0, "ticks")
        check_range("time_jitter_ns", self.time_jitter_ns, 0.0, 1000.0, "ns")
        check_range("adc_per_mev", self.adc_per_mev, 0.01, 1e4, "ADC/MeV")
        check_range("seed_mev", self.seed_mev, 0.1, 1e4, "MeV")
        check_range("crystal_mev", self.crystal_mev, 0.0, self.seed_mev, "MeV")
        check_range("match_rad", self.match_rad, 1e-3, 1.0, "rad")


# ----------------------------------------------------------------------------------------------
# photons
# ----------------------------------------------------------------------------------------------
@dataclass
class PhotonSample:
    """Signal photons of ``n_events`` events (``n`` photons, ordered by event).

    Attributes:
        event (n,) int64; energy (n,) GeV; direction (n, 3) unit vectors; time_us (n,) deposit
        time in the waveform window (us); pi0 (n,) int64 index of the parent pi0 (-1: single
        photon); crystal_energy (n_events, 8736) deposited energy per crystal, MeV (float64);
        event_time_us (n_events,) signal deposit time of each event, us.
    """

    n_events: int
    event: np.ndarray
    energy: np.ndarray
    direction: np.ndarray
    time_us: np.ndarray
    pi0: np.ndarray
    crystal_energy: np.ndarray
    event_time_us: np.ndarray
    config: EclValidationConfig

    @property
    def n_photons(self) -> int:
        return len(self.event)


@lru_cache(maxsize=1)
def _unit() -> np.ndarray:
    """Direction of every crystal centre, shape (8736, 3)."""
    th, ph = crystal_theta(), crystal_phi()
    u = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], axis=1)
    u.setflags(write=False)
    return u


def _iso(rng: np.random.Generator, n: int) -> np.ndarray:
    c = rng.uniform(-1.0, 1.0, n)
    p = rng.uniform(0.0, 2 * np.pi, n)
    s = np.sqrt(1 - c**2)
    return np.stack([s * np.cos(p), s * np.sin(p), c], axis=1)


def _boost_z(e: np.ndarray, p: np.ndarray, beta_gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Boost four-vectors (e (n,), p (n, 3)) along +z by beta*gamma."""
    g = np.sqrt(1 + beta_gamma**2)
    pz = g * p[:, 2] + beta_gamma * e
    return g * e + beta_gamma * p[:, 2], np.stack([p[:, 0], p[:, 1], pz], axis=1)


def _pi0_photons(rng: np.random.Generator, n: int, cfg: EclValidationConfig) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pi0 -> gamma gamma: photon energies (n, 2) GeV and directions (n, 2, 3)."""
    p = np.minimum(rng.gamma(2.0, cfg.pi0_p_mean_gev / 2.0, n), cfg.pi0_p_max_gev)  # CM momentum
    pvec = p[:, None] * _iso(rng, n)
    e = np.sqrt(p**2 + PI0_MASS_GEV**2)
    e, pvec = _boost_z(e, pvec, Y4S_BETA_GAMMA)  # lab pi0
    d = _iso(rng, n) * (0.5 * PI0_MASS_GEV)  # photon 1 momentum in the pi0 frame
    bvec = pvec / e[:, None]  # pi0 velocity (n, 3)
    b2 = (bvec**2).sum(1)
    g = 1.0 / np.sqrt(1.0 - b2)
    es, ps = [], []
    for sign in (1.0, -1.0):
        q = sign * d
        bq = (bvec * q).sum(1)
        e_lab = g * (0.5 * PI0_MASS_GEV + bq)
        coef = np.where(b2 > 0, (g - 1) * bq / np.maximum(b2, 1e-300), 0.0) + g * 0.5 * PI0_MASS_GEV
        p_lab = q + coef[:, None] * bvec
        es.append(e_lab)
        ps.append(p_lab / np.linalg.norm(p_lab, axis=1, keepdims=True))
    return np.stack(es, 1), np.stack(ps, 1)


def simulate_photons(n_events: int, seed: int, config: EclValidationConfig | None = None) -> PhotonSample:
    """Signal photons and their crystal deposits for ``n_events`` events (see module docstring).

    All randomness comes from ``stream_rng(seed, "validation.ecl")``: same arguments -> identical sample.
    """
    from b2bkg.core.seeding import stream_rng

    cfg = config or EclValidationConfig()
    if isinstance(n_events, bool) or not isinstance(n_events, (int, np.integer)) or n_events < 1:
        raise ConfigError(f"events: {n_events!r} must be a positive integer")
    rng = stream_rng(seed, ECL_DOMAIN)
    ns, npi = n_events * cfg.photons_per_event, n_events * cfg.pi0_per_event
    lo, hi = cfg.photon_energy_gev
    e_single = np.exp(rng.uniform(np.log(lo), np.log(hi), ns))
    cos_lo, cos_hi = np.cos(np.deg2rad(cfg.theta_range_deg[1])), np.cos(np.deg2rad(cfg.theta_range_deg[0]))
    c = rng.uniform(cos_lo, cos_hi, ns)
    ph = rng.uniform(0, 2 * np.pi, ns)
    s = np.sqrt(1 - c**2)
    d_single = np.stack([s * np.cos(ph), s * np.sin(ph), c], axis=1)
    e_pi, d_pi = _pi0_photons(rng, npi, cfg)
    event = np.concatenate([np.arange(ns) // max(cfg.photons_per_event, 1), np.repeat(np.arange(npi) // max(cfg.pi0_per_event, 1), 2)])
    energy = np.concatenate([e_single, e_pi.reshape(-1)])
    direction = np.concatenate([d_single, d_pi.reshape(-1, 3)])
    pi0 = np.concatenate([np.full(ns, -1, np.int64), np.repeat(np.arange(npi, dtype=np.int64), 2)])
    # acceptance (pi0 photons outside are dropped; their partner stays as a photon of the event)
    cth = direction[:, 2]
    acc = (cth >= cos_lo) & (cth <= cos_hi)
    o = np.argsort(event[acc], kind="stable")
    event, energy, direction, pi0 = event[acc][o].astype(np.int64), energy[acc][o], direction[acc][o], pi0[acc][o]
    det_pulse = PulseShape()
    jitter = rng.standard_normal(n_events) * cfg.time_jitter_ns * 1e-3
    event_time = cfg.signal_peak_tick * TICK_US - det_pulse.peak_time_us + jitter  # deposit time, us
    dep = deposit_showers(event, energy, direction, n_events, rng, cfg)
    return PhotonSample(n_events, event, energy, direction, event_time[event], pi0, dep, event_time, cfg)


def deposit_showers(event: np.ndarray, energy: np.ndarray, direction: np.ndarray, n_events: int,
                    rng: np.random.Generator, config: EclValidationConfig | None = None) -> np.ndarray:
    """Share every photon's deposited energy over the 5x5 window of the crystal it points to.

    Args:
        event: (n,) event index of each photon; energy: (n,) GeV; direction: (n, 3) unit vectors.
    Returns:
        deposited energy per crystal, shape (n_events, 8736), MeV.
    """
    cfg = config or EclValidationConfig()
    n = len(event)
    out = np.zeros(n_events * N_CRYSTALS)
    if n == 0:
        return out.reshape(n_events, N_CRYSTALS)
    unit = _unit()
    hit = np.concatenate([np.argmax(direction[a : a + 512] @ unit.T, axis=1) for a in range(0, n, 512)])  # (n,)
    nb = neighbour_table(5)[hit]  # (n, K)
    valid = nb >= 0
    nbc = np.where(valid, nb, hit[:, None])
    ang = np.arccos(np.clip(np.einsum("nkx,nx->nk", unit[nbc], direction), -1.0, 1.0))  # (n, K) rad
    h = cfg.halo_fraction
    prof = (1 - h) * np.exp(-ang / cfg.core_rad) / cfg.core_rad**2 + h * np.exp(-ang / cfg.halo_rad) / cfg.halo_rad**2
    w = prof * rng.gamma(cfg.share_gamma_shape, 1.0 / cfg.share_gamma_shape, nb.shape) * valid
    w /= w.sum(axis=1, keepdims=True)
    rel = np.hypot(cfg.stochastic_term / np.maximum(energy, 1e-3) ** 0.25, cfg.constant_term)
    dep = energy * 1e3 * np.clip(cfg.containment + rel * rng.standard_normal(n), 0.0, 1.0)  # MeV
    e = w * dep[:, None]
    key = (event[:, None] * N_CRYSTALS + nbc)[valid]
    out += np.bincount(key, weights=e[valid], minlength=n_events * N_CRYSTALS)
    return out.reshape(n_events, N_CRYSTALS)


def signal_waveforms(photons: PhotonSample, start: int = 0, stop: int | None = None):
    """Signal waveforms of events ``start .. stop-1``: energy x 20 ADC/MeV x template at the event's
    signal time, no pedestal. Returns :class:`b2bkg.io.EclWaveforms`, (c, 8736, 31) int32."""
    from b2bkg.io import EclWaveforms

    stop = photons.n_events if stop is None else stop
    tmpl = PulseShape().template(photons.event_time_us[start:stop])  # (c, 31), unit peak
    e = photons.crystal_energy[start:stop] * photons.config.adc_per_mev  # (c, 8736) ADC
    return EclWaveforms(np.rint(e[:, :, None] * tmpl[:, None, :]).astype(np.int32))


# ----------------------------------------------------------------------------------------------
# fit and clusters
# ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _min_template_norm(pulse: PulseShape, lo: float = 2.0, hi: float = 28.0, step: float = 0.1) -> float:
    """Smallest ``|T_j - mean T_j|`` over the fit's time grid (the Cauchy-Schwarz bound's denominator).

    (A bound through a low-rank basis of the templates does not help: the shifted templates span
    ~22 of the 31 dimensions to 2 %.)
    """
    peaks = np.arange(lo, hi + 0.5 * step, step) * TICK_US
    t = pulse.template(peaks - pulse.peak_time_us, N_SAMPLES, TICK_US)
    return float(np.sqrt(((t - t.mean(1, keepdims=True)) ** 2).sum(1)).min())


def fit_crystals(waveforms: np.ndarray, *, threshold_adu: float, pulse: PulseShape | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Template-fit amplitude and peak time of the crystals whose fit can exceed ``threshold_adu``.

    A crystal is fitted only when the upper bound of its fitted amplitude,
    ``|S - mean S| / min_j |T_j - mean T_j|`` (Cauchy-Schwarz), reaches ``threshold_adu``: the results
    above the threshold are those of fitting every crystal (about 40 % of the crystals of a true
    background event are fitted at the default 2 MeV).

    Args:
        waveforms: (n, 8736, 31) ADC (any pedestal; the fit's pedestal is free).
        threshold_adu: crystals whose amplitude bound is below it are not fitted (amplitude 0).
    Returns:
        amplitude (n, 8736) ADC (0 where not fitted), peak time (n, 8736) us (NaN where not fitted).
    """
    from b2bkg.ecl.fit import fit_waveforms

    p = pulse or PulseShape()
    w = np.asarray(waveforms)
    flat = w.reshape(-1, N_SAMPLES)
    sc = flat - flat.mean(axis=1, keepdims=True, dtype=np.float64)
    bound = np.sqrt(np.einsum("ij,ij->i", sc, sc)) / _min_template_norm(p)
    idx = np.flatnonzero(bound >= threshold_adu * (1 - 1e-6))
    amp = np.zeros(len(flat))
    tpk = np.full(len(flat), np.nan)
    if len(idx):
        r = fit_waveforms(flat[idx], pulse=p)
        amp[idx], tpk[idx] = r.amplitude_adu, r.peak_time_us
    return amp.reshape(w.shape[:-1]), tpk.reshape(w.shape[:-1])


@dataclass
class ClusterTable:
    """Clusters of a set of events (``m`` clusters, ordered by event).

    Attributes:
        event (m,) int64; seed (m,) 0-based crystal index; energy (m,) GeV; direction (m, 3) unit
        energy-weighted centroid; time_us (m,) peak time of the seed's fine fit, us; n_crystals (m,).
    """

    event: np.ndarray
    seed: np.ndarray
    energy: np.ndarray
    direction: np.ndarray
    time_us: np.ndarray
    n_crystals: np.ndarray

    @staticmethod
    def concat(parts: list[ClusterTable], offsets: list[int]) -> ClusterTable:
        """Concatenate tables of consecutive event chunks starting at ``offsets``."""
        return ClusterTable(np.concatenate([p.event + o for p, o in zip(parts, offsets)]),
                            *(np.concatenate([getattr(p, k) for p in parts]) for k in ("seed", "energy", "direction", "time_us", "n_crystals")))


def find_clusters(waveforms: np.ndarray, config: EclValidationConfig | None = None) -> ClusterTable:
    """Fit, find seeds (the pillar's selection) and build 5x5 clusters of (n, 8736, 31) waveforms."""
    from b2bkg.ecl.fit import fit_waveforms
    from b2bkg.ecl.select import find_seeds

    cfg = config or EclValidationConfig()
    w = np.asarray(waveforms)
    amp, _ = fit_crystals(w, threshold_adu=cfg.crystal_mev * cfg.adc_per_mev)
    e = amp / cfg.adc_per_mev  # MeV (n, 8736)
    seeds = find_seeds(e, cfg.seed_mev)
    ev, cr = np.nonzero(seeds)
    m = len(ev)
    unit = _unit()
    if m == 0:
        z = np.zeros(0)
        return ClusterTable(ev.astype(np.int64), cr.astype(np.int64), z, np.zeros((0, 3)), z, np.zeros(0, np.int64))
    t_seed = fit_waveforms(w[ev, cr], step_ticks=0.01).peak_time_us  # (m,) fine time grid
    nb = neighbour_table(5)[cr]  # (m, K)
    sid = np.broadcast_to(np.arange(m)[:, None], nb.shape)
    evb = np.broadcast_to(ev[:, None], nb.shape)
    ok = nb >= 0
    sid, evb, crys = sid[ok], evb[ok], nb[ok]
    ok = e[evb, crys] > cfg.crystal_mev
    sid, evb, crys = sid[ok], evb[ok], crys[ok]
    # a crystal inside two windows goes to the nearer seed (largest cosine)
    cosang = np.einsum("px,px->p", unit[crys], unit[cr[sid]])
    key = evb * N_CRYSTALS + crys
    o = np.lexsort((-cosang, key))
    first = np.r_[True, key[o][1:] != key[o][:-1]]
    sid, evb, crys = sid[o][first], evb[o][first], crys[o][first]
    ec = e[evb, crys]  # MeV
    energy = np.bincount(sid, ec, minlength=m)
    cen = np.stack([np.bincount(sid, ec * unit[crys, k], minlength=m) for k in range(3)], axis=1)
    cen /= np.maximum(np.linalg.norm(cen, axis=1, keepdims=True), 1e-300)
    return ClusterTable(ev.astype(np.int64), cr.astype(np.int64), energy * 1e-3, cen, t_seed,
                        np.bincount(sid, minlength=m).astype(np.int64))


def match_photons(photons: PhotonSample, clusters: ClusterTable, match_rad: float) -> np.ndarray:
    """Index of the cluster nearest to each photon within ``match_rad`` (same event), -1 if none.

    Returns: (n_photons,) int64.
    """
    n = photons.n_photons
    out = np.full(n, -1, np.int64)
    lo = np.searchsorted(clusters.event, photons.event, "left")
    hi = np.searchsorted(clusters.event, photons.event, "right")
    cnt = hi - lo
    tot = int(cnt.sum())
    if tot == 0:
        return out
    pi = np.repeat(np.arange(n), cnt)
    ci = lo[pi] + np.arange(tot) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    cosang = np.einsum("px,px->p", photons.direction[pi], clusters.direction[ci])
    good = cosang > np.cos(match_rad)
    pi, ci, cosang = pi[good], ci[good], cosang[good]
    o = np.lexsort((-cosang, pi))
    pi, ci = pi[o], ci[o]
    first = np.r_[True, pi[1:] != pi[:-1]] if len(pi) else np.zeros(0, bool)
    out[pi[first]] = ci[first]
    return out


# ----------------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------------
def fit_core_gaussian(x: np.ndarray, *, n_sigma: float = 2.0, bins: int = 40, iterations: int = 2) -> dict[str, float]:
    """Mean and width (with errors) of a Gaussian fitted to the core of ``x``.

    Binned Poisson maximum likelihood of a truncated Gaussian on ``mean +- n_sigma sigma``, the
    range starting from the median +- n_sigma x 1.4826 MAD and re-centred on the fit
    ``iterations`` times; errors from the numerical Hessian.

    Returns:
        ``{"mean", "mean_err", "sigma", "sigma_err", "n"}`` (NaN when fewer than 20 entries).
    """
    from scipy.optimize import minimize
    from scipy.special import ndtr

    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    nan = {"mean": float("nan"), "mean_err": float("nan"), "sigma": float("nan"), "sigma_err": float("nan"), "n": int(len(x))}
    if len(x) < 20:
        return nan
    mu = float(np.median(x))
    s = float(1.4826 * np.median(np.abs(x - mu))) or float(x.std()) or 1e-12
    res = nan
    for _ in range(iterations + 1):
        lo, hi = mu - n_sigma * s, mu + n_sigma * s
        h, edges = np.histogram(x, bins=bins, range=(lo, hi))
        if h.sum() < 20:
            return nan
        scale = s

        def nll(th, h=h, edges=edges, scale=scale):
            m, ls = th[0] * scale, th[1]
            sd = np.exp(ls) * scale
            p = np.diff(ndtr((edges - m) / sd))
            lam = h.sum() * np.maximum(p / max(p.sum(), 1e-300), 1e-300)  # shape inside the window
            return float(np.sum(lam - h * np.log(lam)))

        th0 = np.array([mu / scale, 0.0])
        r = minimize(nll, th0, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 2000})
        th = r.x
        eps = 1e-3
        H = np.empty((2, 2))
        for i in range(2):
            for j in range(i, 2):
                ei, ej = np.eye(2)[i] * eps, np.eye(2)[j] * eps
                H[i, j] = H[j, i] = (nll(th + ei + ej) - nll(th + ei - ej) - nll(th - ei + ej) + nll(th - ei - ej)) / (4 * eps * eps)
        try:
            cov = np.linalg.inv(H)
            errs = np.sqrt(np.maximum(np.diag(cov), 0.0))
        except np.linalg.LinAlgError:
            errs = np.array([np.nan, np.nan])
        mu, s = float(th[0] * scale), float(np.exp(th[1]) * scale)
        res = {"mean": mu, "mean_err": float(errs[0] * scale), "sigma": s, "sigma_err": float(s * errs[1]), "n": int(len(x))}
    return res


def summarize(photons: PhotonSample, clusters: ClusterTable, config: EclValidationConfig | None = None) -> tuple[dict, dict]:
    """The scenario's numbers (``validation.json["ecl"][scenario]``) and the arrays behind them.

    Returns:
        (summary dict with ``energy_resolution``, ``time_resolution_ns``, ``pi0_mass_mean_gev``,
        ``pi0_mass_width_gev``, ``e_extra_mean_gev`` and their ``*_err`` plus biases and counts;
        dict of arrays ``response`` (single photons: E_cl / E_true - 1), ``dt_ns``, ``pi0_mass_gev``,
        ``e_extra_gev`` (per event)).
    """
    cfg = config or photons.config
    m = match_photons(photons, clusters, cfg.match_rad)
    has = m >= 0
    single = photons.pi0 < 0
    mc = np.maximum(m, 0)
    resp = clusters.energy[mc[single & has]] / photons.energy[single & has] - 1.0
    dt = (clusters.time_us[mc[has]] - (photons.time_us[has] + PulseShape().peak_time_us)) * 1e3  # ns
    # pi0: both photons matched to two different clusters
    pid = photons.pi0
    o = np.flatnonzero(pid >= 0)
    o = o[np.argsort(pid[o], kind="stable")]
    pair = np.flatnonzero((pid[o][1:] == pid[o][:-1]))  # first photon of complete pairs
    a, b = o[pair], o[pair + 1]
    ok = has[a] & has[b] & (m[a] != m[b])
    ca, cb = m[a[ok]], m[b[ok]]
    cosang = np.clip(np.einsum("px,px->p", clusters.direction[ca], clusters.direction[cb]), -1.0, 1.0)
    mass = np.sqrt(np.maximum(2 * clusters.energy[ca] * clusters.energy[cb] * (1 - cosang), 0.0))
    # E_extra: clusters matched to no photon
    used = np.zeros(len(clusters.energy), bool)
    used[m[has]] = True
    e_extra = np.bincount(clusters.event[~used], clusters.energy[~used], minlength=photons.n_events)
    fe, ft, fm = fit_core_gaussian(resp), fit_core_gaussian(dt), fit_core_gaussian(mass)
    n = photons.n_events
    d = {
        "energy_resolution": fe["sigma"], "energy_resolution_err": fe["sigma_err"],
        "energy_bias": fe["mean"], "energy_bias_err": fe["mean_err"],
        "time_resolution_ns": ft["sigma"], "time_resolution_ns_err": ft["sigma_err"],
        "time_bias_ns": ft["mean"], "time_bias_ns_err": ft["mean_err"],
        "pi0_mass_mean_gev": fm["mean"], "pi0_mass_mean_gev_err": fm["mean_err"],
        "pi0_mass_width_gev": fm["sigma"], "pi0_mass_width_gev_err": fm["sigma_err"],
        "e_extra_mean_gev": float(e_extra.mean()), "e_extra_mean_gev_err": float(e_extra.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        "n_single_photons": int(single.sum()), "single_photon_efficiency": float(has[single].mean()) if single.any() else float("nan"),
        "n_pi0": int(len(a)), "n_pi0_reconstructed": int(ok.sum()),
        "clusters_per_event": float(len(clusters.energy) / n),
        "unmatched_clusters_per_event": float((~used).sum() / n),
    }
    e_true = photons.energy[single & has]
    bins = {}
    for name, (lo, hi) in ENERGY_BINS_GEV.items():
        f = fit_core_gaussian(resp[(e_true >= lo) & (e_true < hi)])
        bins[name] = {"energy_resolution": f["sigma"], "energy_resolution_err": f["sigma_err"],
                      "energy_bias": f["mean"], "energy_bias_err": f["mean_err"], "n_photons": f["n"]}
    d["energy_bins"] = bins
    arrays = {"response": resp, "e_true_gev": e_true, "dt_ns": dt, "pi0_mass_gev": mass, "e_extra_gev": e_extra}
    return d, arrays


def run_ecl_scenarios(photons: PhotonSample, backgrounds: dict, *, chunk: int = 10) -> dict:
    """Reconstruct the same signal photons on every scenario's background.

    Args:
        photons: from :func:`simulate_photons`.
        backgrounds: scenario name -> None (no background) or a callable ``(start, stop) ->
            EclWaveforms`` giving the background (with pedestal) of events ``start .. stop-1``.
        chunk: events per chunk (memory ~ 3 MB per event).
    Returns:
        scenario -> ``{**summary, "_arrays": arrays}`` (see :func:`summarize`).
    """
    from b2bkg.core.progress import progress
    from b2bkg.overlay.ecl import overlay_ecl

    cfg = photons.config
    n = photons.n_events
    parts: dict[str, list] = {k: [] for k in backgrounds}
    for a in progress(range(0, n, chunk), total=-(-n // chunk), desc="ecl clusters", unit="chunk"):
        b = min(n, a + chunk)
        sig = signal_waveforms(photons, a, b)
        for name, src in backgrounds.items():
            w = sig if src is None else overlay_ecl(sig, src(a, b))
            parts[name].append(find_clusters(w.waveforms, cfg))
    out = {}
    offsets = list(range(0, n, chunk))
    for name, p in parts.items():
        d, arr = summarize(photons, ClusterTable.concat(p, offsets), cfg)
        d["_arrays"] = arr
        out[name] = d
    return out


# ----------------------------------------------------------------------------------------------
# the validation step of ``b2bkg validate``
# ----------------------------------------------------------------------------------------------
def _ecl_conditions(n_events: int, seed: int):
    """Beam conditions of events 0..n-1 as the truth simulators draw them (shared PXD/ECL stream)."""
    from b2bkg.core.conditions import CONDITION_NAMES, resolve_conditions
    from b2bkg.core.seeding import event_rng
    from b2bkg.ecl.simulate import CONDITIONS_DOMAIN
    from b2bkg.io import Conditions

    src = resolve_conditions(None)
    vals = np.stack([src.get(i, event_rng(seed, CONDITIONS_DOMAIN, i)) for i in range(n_events)]).astype(np.float32)
    return Conditions(vals, CONDITION_NAMES)


def ecl_checks(section: dict) -> dict:
    """Checks of the ECL section: (c) agrees with (b) within 2 combined standard errors for every
    number of :data:`ECL_KEYS`; (b) has more E_extra than (a) (the background is visible)."""
    checks: dict = {}
    none, truth, gen = (section.get(k, {}) for k in ("none", "truth", "generated"))
    if "skipped" not in truth and "e_extra_mean_gev" in truth and "e_extra_mean_gev" in none:
        z = (truth["e_extra_mean_gev"] - none["e_extra_mean_gev"]) / np.hypot(truth["e_extra_mean_gev_err"], none["e_extra_mean_gev_err"])
        checks["ecl_e_extra_truth_above_none"] = {"significance": float(z), "passed": bool(z >= 3.0)}
    if gen and "skipped" not in gen and "skipped" not in truth:
        c = {}
        for k in ECL_KEYS:
            z = (gen[k] - truth[k]) / np.hypot(gen[f"{k}_err"], truth[f"{k}_err"])
            c[k] = {"significance": float(z), "agree": bool(abs(z) < 2.0)}
        c["agree"] = all(v["agree"] for v in c.values())
        checks["ecl_generated_agrees_with_truth"] = c
    return checks


def validate_ecl(out, *, events: int, seed: int = 1, ecl_model=None, device: str = "cpu",
                 config: EclValidationConfig | None = None, plots: bool = True, chunk: int = 10,
                 command: str = "", hybrid: bool = True) -> dict:
    """The ECL part of ``b2bkg validate``: writes ``out/signal_ecl.h5`` (and ``out/ecl.png``).

    Args:
        out: output folder (exists).
        events: signal events; event ``i`` is overlaid on true background event ``i`` of ``seed``
            (the ECL truth simulator, at the beam conditions shared with the PXD truth) and on the
            model's event ``i`` generated at those conditions.
        ecl_model: run folder of an ECL model (``ecl-gan``, ``ecl-ae``, ``ecl-cov``) for scenario
            (c); None: (c) is skipped.
        hybrid: scenario (c) as in production (seed 004): the selected energetic waveforms of the
            random-trigger event are kept and the model generates the others; False: fully generated.
    Returns:
        the ``ecl`` section of ``validation.json``: scenario -> numbers (:func:`summarize`), plus
        ``settings`` (and ``generated.model``).
    """
    import time
    from pathlib import Path

    from b2bkg.core.errors import ModelError
    from b2bkg.ecl.simulate import iter_ecl_chunks
    from b2bkg.io import FileWriter

    cfg = config or EclValidationConfig()
    out = Path(out)
    t0 = time.time()
    timing = {}
    photons = simulate_photons(events, seed, cfg)
    cond = _ecl_conditions(events, seed)
    attrs = {"content": "signal", "validation": "ecl", "photons_per_event": cfg.photons_per_event, "pi0_per_event": cfg.pi0_per_event}
    with FileWriter(out / "signal_ecl.h5", seed=seed, command=command, attrs=attrs) as w:
        for a in range(0, events, chunk):
            b = min(events, a + chunk)
            w.append(ecl=signal_waveforms(photons, a, b), conditions=cond.slice(a, b))
    timing["signal_s"] = time.time() - t0

    def truth(a: int, b: int):
        t = time.time()
        wf = next(iter_ecl_chunks(b - a, seed, start=a, chunk_size=b - a))[0]
        timing["truth_background_s"] = timing.get("truth_background_s", 0.0) + time.time() - t
        return wf

    backgrounds: dict = {"none": None, "truth": truth}
    section: dict = {}
    model_info = None
    if ecl_model is not None:
        from b2bkg.overlay.background import ModelBackground

        if not Path(ecl_model).is_dir():
            raise ModelError(f"--ecl-model {ecl_model}: not a run folder")
        mb = ModelBackground(ecl_model, seed, conditions=str(out / "signal_ecl.h5"), device=device)
        if "ecl" not in mb.groups:
            raise ModelError(f"--ecl-model {ecl_model}: model {mb.run.family.name} generates no ECL waveforms (outputs {list(mb.groups)})")

        def generated(a: int, b: int):
            # the seed's production scheme (hybrid): the energetic waveforms selected in the
            # random-trigger event (here: the truth background) are kept, the model generates the rest
            t = time.time()
            wf = mb.read("ecl", a, b)
            if hybrid:
                from b2bkg.ecl.select import hybrid as make_hybrid, select_waveforms

                bg = next(iter_ecl_chunks(b - a, seed, start=a, chunk_size=b - a))[0]
                wf = make_hybrid(bg, wf, select_waveforms(bg.waveforms))
            timing["generated_background_s"] = timing.get("generated_background_s", 0.0) + time.time() - t
            return wf

        backgrounds["generated"] = generated
        model_info = {"model": mb.run.family.name, "run_dir": str(Path(ecl_model).resolve()),
                      "hybrid": bool(hybrid), "note": "energetic waveforms kept from the truth event, the rest generated" if hybrid else "fully generated"}
    else:
        section["generated"] = {"skipped": "no --ecl-model given: scenario (c) needs an ECL model run folder"}
    t = time.time()
    res = run_ecl_scenarios(photons, backgrounds, chunk=chunk)
    timing["reconstruct_s"] = time.time() - t - timing.get("truth_background_s", 0.0) - timing.get("generated_background_s", 0.0)
    arrays = {k: v.pop("_arrays") for k, v in res.items()}
    section.update(res)
    if model_info:
        section["generated"]["model"] = model_info
    section = {k: section[k] for k in ("none", "truth", "generated")}
    if plots:
        from .plots import plot_ecl

        plot_ecl(arrays, res, out / "ecl.png")
    section["settings"] = {"events": int(events), "n_photons": photons.n_photons, "photons_per_event": cfg.photons_per_event,
                           "pi0_per_event": cfg.pi0_per_event, "seed_mev": cfg.seed_mev, "crystal_mev": cfg.crystal_mev,
                           "match_rad": cfg.match_rad, "energy_bins_gev": {k: [lo, hi if np.isfinite(hi) else None] for k, (lo, hi) in ENERGY_BINS_GEV.items()},
                           "timing_s": {**timing, "total_s": time.time() - t0}}
    return section
