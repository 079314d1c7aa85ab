"""PXD background truth simulator: zero-suppressed digits from the physics of the sources.

Each event: draw the beam conditions (:mod:`b2bkg.core.conditions`, stream
``event_rng(seed, "conditions", i)``, shared with the ECL simulator), then let every source act
with a rate scaled by its own power law of the conditions, track what it produces through the
40 sensors, deposit charge, diffuse it onto pixels and digitize. All randomness of event ``i``
comes from ``event_rng(seed, "pxd.simulate", i)``; the detector payload
(:mod:`b2bkg.pxd.detector`: pedestals, dead and hot pixels) never depends on the seed.

Sources (where they act decides their phi / z pattern; no per-sensor factors anywhere):

* **two-photon pairs** (luminosity): e+- from the IP with a steeply falling pT spectrum
  (dN/dpT ~ pT^-n above ``pt_min_mev``) and a wide rapidity spread, boosted with the
  centre-of-mass motion: along z (beta*gamma = 0.287, 7 on 4 GeV) and along +x by the
  half crossing angle (beta_x = 0.0415; the CM of SuperKEKB moves towards +x). Helices in the
  1.5 T field are intersected exactly with the 20 ladder planes; a particle whose helix diameter
  barely reaches a layer crosses it at a shallow angle (long clusters, high charge) and, as it
  curls, again every turn (``turn_survival`` per turn: beam-pipe and sensor material). The pT
  threshold to reach 14 mm vs 22 mm makes the layer-1/layer-2 ratio; the +x boost and a 0.2 mm
  +x offset of the beam orbit at the IP from the PXD axis (``ip_x_mm``) make the phi modulation
  (most hits at phi ~ 0, fewest at phi ~ 180 deg).
* **radiative Bhabha secondaries** (luminosity), **synchrotron radiation** (HER current),
  **Touschek** (current^2) and **beam-gas** (current x pressure) of each ring: particles lost
  at points (z, radius, phi distributions per source) shower there; the hit density on a sensor is
  the solid angle it covers seen from the loss points, |n.(x-s)|/|x-s|^3, summed over the loss
  distribution. Secondaries are photons (Compton/photo-electrons with the Katz-Penfold range in
  Si: one or a few pixels) or charged shower particles (MIP-like straight tracks with a
  cos-law incidence: 2-4 pixels). Synchrotron photons are keV photons: single pixels near
  threshold, concentrated in phi where the fan is intercepted.
* random **noise hits** (1e-5 per pixel per frame), the **hot pixels** and **dead pixels** of the
  detector payload.

Charge: MIP energy loss MPV 75 e-/um with a Moyal (Landau-like) factor per crossing for the soft
collisions, plus explicit delta electrons above 10 keV (Landau xi, 1/T^2 spectrum) that stop
locally and make the high-charge tail; photon/delta electrons use the Katz-Penfold range. The
charge of a crossing is split into groups along its projected path (gamma-distributed shares),
each diffused with a Gaussian onto the pixel grid; charges on one pixel add. Digitization: 216.7 e-
per ADU, 0.7 ADU noise, pedestal of the pixel added and the sum clipped at 255 before the pedestal
is subtracted, zero suppression at ``threshold_adu`` (7).

Example:
    >>> from b2bkg.core.seeding import event_rng
    >>> ev = simulate_pxd_event(event_rng(1, "pxd.simulate", 0), np.array([1., 1, 1, 1, 1, 0]))
    >>> 30_000 < len(ev["charge"]) < 150_000 and int(ev["charge"].min()) >= 7
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from b2bkg.core.conditions import CONDITION_NAMES, ConditionsConfig, ConditionsSource, resolve_conditions
from b2bkg.core.config import check_range, to_dict
from b2bkg.core.errors import ConfigError
from b2bkg.core.progress import progress
from b2bkg.core.seeding import event_rng
from b2bkg.io.events import Conditions, PxdDigits

from . import geometry as geo
from .detector import N_ALL_PIXELS, PxdDetector, PxdDetectorConfig, default_detector

__all__ = [
    "Scaling", "TwoPhotonConfig", "LossSourceConfig", "DigitizerConfig", "PxdSimConfig", "SOURCE_NAMES",
    "source_scales", "simulate_pxd_event", "iter_pxd_chunks", "simulate_pxd", "PXD_DOMAIN", "CONDITIONS_DOMAIN",
]

PXD_DOMAIN = "pxd.simulate"
CONDITIONS_DOMAIN = "conditions"
ELECTRON_MASS_MEV = 0.511
SI_DENSITY_G_CM3 = 2.33


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scaling:
    """How a source responds to the beam conditions: rate = nominal * prod(condition^power), times
    ``injection_factor`` in injection events (conditions are scale factors vs nominal)."""

    lumi: float = 0.0
    her_current: float = 0.0
    ler_current: float = 0.0
    her_vacuum: float = 0.0
    ler_vacuum: float = 0.0
    injection_factor: float = 1.0

    def __post_init__(self):
        for name in ("lumi", "her_current", "ler_current", "her_vacuum", "ler_vacuum"):
            check_range(name, getattr(self, name), -4.0, 4.0)
        check_range("injection_factor", self.injection_factor, 0.0, 100.0)

    def factor(self, cond: np.ndarray) -> float:
        """Rate factor for one event's conditions, shape (6,) in the order of CONDITION_NAMES."""
        lumi, her, ler, hv, lv, inj = (float(x) for x in cond[:6])
        f = lumi**self.lumi * her**self.her_current * ler**self.ler_current * hv**self.her_vacuum * lv**self.ler_vacuum
        return f * (self.injection_factor if inj > 0.5 else 1.0)


@dataclass(frozen=True)
class TwoPhotonConfig:
    """e+e- -> e+e- e+e- pairs from the IP (the dominant PXD background).

    ``particles_per_event``: e+- per frame at nominal luminosity with pT > ``pt_min_mev`` (after the
    boost; only those can reach layer 1), dN/dpT ~ pT^-``pt_power``; pseudo-rapidity in the CM
    ~ N(0, ``eta_sigma``); CM boost ``boost_betagamma_z`` along z and ``boost_beta_x`` along x.
    """

    particles_per_event: float = 10150.0
    pt_min_mev: float = 2.8
    pt_max_mev: float = 500.0
    pt_power: float = 3.6
    eta_sigma: float = 2.0
    boost_betagamma_z: float = 0.287
    boost_beta_x: float = 0.0415
    turn_survival: float = 0.3
    max_turns: int = 6
    luminous_sigma_z_mm: float = 0.35
    ip_x_mm: float = 0.2
    scaling: Scaling = field(default_factory=lambda: Scaling(lumi=1.0))

    def __post_init__(self):
        check_range("particles_per_event", self.particles_per_event, 0.0, 1e6)
        check_range("pt_min_mev", self.pt_min_mev, 0.5, 100.0, "MeV")
        check_range("pt_max_mev", self.pt_max_mev, self.pt_min_mev, 1e5, "MeV")
        check_range("pt_power", self.pt_power, 1.1, 20.0)
        check_range("eta_sigma", self.eta_sigma, 0.01, 10.0)
        check_range("boost_betagamma_z", self.boost_betagamma_z, -2.0, 2.0)
        check_range("boost_beta_x", self.boost_beta_x, -0.5, 0.5)
        check_range("turn_survival", self.turn_survival, 0.0, 0.99)
        check_range("max_turns", self.max_turns, 1, 50)
        check_range("luminous_sigma_z_mm", self.luminous_sigma_z_mm, 0.0, 50.0, "mm")
        check_range("ip_x_mm", self.ip_x_mm, -5.0, 5.0, "mm")


@dataclass(frozen=True)
class LossSourceConfig:
    """A source of secondaries from beam particles lost at points around the beam line.

    Loss points: z ~ N(``loss_z_mm``, ``loss_z_sigma_mm``) at radius ``loss_radius_mm``, phi ~
    N(``loss_phi_deg``, ``loss_phi_sigma_deg``) (mirrored to ``loss_phi_deg`` + 180 with weight
    ``opposite_fraction``; sigma >= 180 means uniform). ``hits_per_event``: secondaries that hit
    the 40 sensors per frame at nominal conditions. A secondary is a photon with probability
    ``photon_fraction`` (a flux ~ E^-``photon_spectral_index`` between ``photon_min_kev`` and ``photon_max_kev``, weighted
    by its interaction probability in 75 um of Si), else a charged MIP-like particle.
    """

    hits_per_event: float = 1000.0
    loss_z_mm: float = 0.0
    loss_z_sigma_mm: float = 100.0
    loss_radius_mm: float = 10.0
    loss_phi_deg: float = 0.0
    loss_phi_sigma_deg: float = 180.0
    opposite_fraction: float = 0.0
    photon_fraction: float = 0.5
    photon_min_kev: float = 5.0
    photon_max_kev: float = 2000.0
    photon_spectral_index: float = 1.0
    max_incidence_deg: float = 65.0
    scaling: Scaling = field(default_factory=Scaling)

    def __post_init__(self):
        check_range("hits_per_event", self.hits_per_event, 0.0, 1e6)
        check_range("loss_z_mm", self.loss_z_mm, -5000.0, 5000.0, "mm")
        check_range("loss_z_sigma_mm", self.loss_z_sigma_mm, 0.0, 5000.0, "mm")
        check_range("loss_radius_mm", self.loss_radius_mm, 0.0, 1000.0, "mm")
        check_range("loss_phi_deg", self.loss_phi_deg, -360.0, 360.0, "deg")
        check_range("loss_phi_sigma_deg", self.loss_phi_sigma_deg, 0.0, 1000.0, "deg")
        check_range("opposite_fraction", self.opposite_fraction, 0.0, 1.0)
        check_range("photon_fraction", self.photon_fraction, 0.0, 1.0)
        check_range("photon_min_kev", self.photon_min_kev, 2.0, 5000.0, "keV")
        check_range("photon_max_kev", self.photon_max_kev, self.photon_min_kev * 1.01, 5000.0, "keV")
        check_range("photon_spectral_index", self.photon_spectral_index, -2.0, 4.0)
        check_range("max_incidence_deg", self.max_incidence_deg, 0.0, 89.0, "deg")


@dataclass(frozen=True)
class DigitizerConfig:
    """Charge deposition, diffusion and the DEPFET/DCD digitization."""

    mip_mpv_e_per_um: float = 75.0
    landau_width: float = 0.06
    landau_max: float = 10.0
    delta_xi_kev_per_um: float = 0.0179
    delta_cut_kev: float = 10.0
    delta_max_kev: float = 1000.0
    pair_energy_ev: float = 3.65
    electron_straightness: float = 0.3
    diffusion_sigma_um: float = 8.0
    group_step_um: float = 25.0
    min_groups: int = 4
    group_shape: float = 8.0
    electrons_per_adu: float = 216.7
    noise_adu: float = 0.7
    threshold_adu: int = 7
    adc_max_adu: int = 255
    noise_hit_probability: float = 1e-5

    def __post_init__(self):
        check_range("mip_mpv_e_per_um", self.mip_mpv_e_per_um, 1.0, 1000.0, "e-/um")
        check_range("landau_width", self.landau_width, 0.0, 2.0)
        check_range("landau_max", self.landau_max, 0.0, 1000.0)
        check_range("delta_xi_kev_per_um", self.delta_xi_kev_per_um, 0.0, 1.0, "keV/um")
        check_range("delta_cut_kev", self.delta_cut_kev, 1.0, 1000.0, "keV")
        check_range("delta_max_kev", self.delta_max_kev, self.delta_cut_kev, 10000.0, "keV")
        check_range("pair_energy_ev", self.pair_energy_ev, 1.0, 10.0, "eV")
        check_range("electron_straightness", self.electron_straightness, 0.0, 1.0)
        check_range("diffusion_sigma_um", self.diffusion_sigma_um, 0.0, 100.0, "um")
        check_range("group_step_um", self.group_step_um, 1.0, 1000.0, "um")
        check_range("min_groups", self.min_groups, 1, 100)
        check_range("group_shape", self.group_shape, 0.1, 1000.0)
        check_range("electrons_per_adu", self.electrons_per_adu, 1.0, 10000.0, "e-/ADU")
        check_range("noise_adu", self.noise_adu, 0.0, 50.0, "ADU")
        check_range("threshold_adu", self.threshold_adu, 1, 255, "ADU")
        check_range("adc_max_adu", self.adc_max_adu, 1, 255, "ADU")
        check_range("noise_hit_probability", self.noise_hit_probability, 0.0, 0.01)


def _rbb() -> LossSourceConfig:
    # spent e+- of radiative Bhabhas over-bent in the final focus: far, both sides, all phi
    return LossSourceConfig(
        hits_per_event=2000.0, loss_z_mm=0.0, loss_z_sigma_mm=700.0, loss_radius_mm=30.0, loss_phi_deg=0.0,
        loss_phi_sigma_deg=180.0, photon_fraction=0.75, photon_min_kev=10.0, photon_max_kev=2000.0, photon_spectral_index=0.3, scaling=Scaling(lumi=1.0))


def _synchrotron() -> LossSourceConfig:
    # HER SR fan (horizontal plane, outer side; photons travel +z) scattered off the IP beam pipe
    return LossSourceConfig(
        hits_per_event=20000.0, loss_z_mm=70.0, loss_z_sigma_mm=80.0, loss_radius_mm=10.0, loss_phi_deg=0.0,
        loss_phi_sigma_deg=70.0, photon_fraction=1.0, photon_min_kev=2.0, photon_max_kev=20.0,
        scaling=Scaling(her_current=1.0))


def _touschek_ler() -> LossSourceConfig:
    # LER (e+, travels to -z): off-momentum particles lost in the horizontal plane upstream (+z)
    return LossSourceConfig(
        hits_per_event=4000.0, loss_z_mm=250.0, loss_z_sigma_mm=150.0, loss_radius_mm=10.0, loss_phi_deg=0.0,
        loss_phi_sigma_deg=60.0, opposite_fraction=0.0, photon_fraction=0.6, photon_min_kev=10.0, photon_max_kev=2000.0, photon_spectral_index=0.3,
        scaling=Scaling(ler_current=2.0, injection_factor=1.6))


def _touschek_her() -> LossSourceConfig:
    return LossSourceConfig(
        hits_per_event=1000.0, loss_z_mm=-250.0, loss_z_sigma_mm=150.0, loss_radius_mm=10.0, loss_phi_deg=0.0,
        loss_phi_sigma_deg=60.0, opposite_fraction=0.0, photon_fraction=0.6, photon_min_kev=10.0, photon_max_kev=2000.0, photon_spectral_index=0.3,
        scaling=Scaling(her_current=2.0, injection_factor=1.3))


def _beamgas_ler() -> LossSourceConfig:
    # bremsstrahlung (horizontal) and Coulomb (vertical) losses together: all phi
    return LossSourceConfig(
        hits_per_event=2500.0, loss_z_mm=150.0, loss_z_sigma_mm=200.0, loss_radius_mm=10.0, loss_phi_deg=0.0,
        loss_phi_sigma_deg=180.0, opposite_fraction=0.0, photon_fraction=0.6, photon_min_kev=10.0, photon_max_kev=2000.0, photon_spectral_index=0.3,
        scaling=Scaling(ler_current=1.0, ler_vacuum=1.0, injection_factor=1.6))


def _beamgas_her() -> LossSourceConfig:
    return LossSourceConfig(
        hits_per_event=1000.0, loss_z_mm=-150.0, loss_z_sigma_mm=200.0, loss_radius_mm=10.0, loss_phi_deg=0.0,
        loss_phi_sigma_deg=180.0, opposite_fraction=0.0, photon_fraction=0.6, photon_min_kev=10.0, photon_max_kev=2000.0, photon_spectral_index=0.3,
        scaling=Scaling(her_current=1.0, her_vacuum=1.0, injection_factor=1.3))


@dataclass(frozen=True)
class PxdSimConfig:
    """Complete configuration of the PXD truth simulator (defaults = calibrated nominal).

    Load from YAML with ``load_config(PxdSimConfig, path)``; nested keys e.g.
    ``two_photon.pt_power`` or ``digitizer.threshold_adu``.
    """

    field_t: float = 1.5
    two_photon: TwoPhotonConfig = field(default_factory=TwoPhotonConfig)
    rbb: LossSourceConfig = field(default_factory=_rbb)
    synchrotron: LossSourceConfig = field(default_factory=_synchrotron)
    touschek_ler: LossSourceConfig = field(default_factory=_touschek_ler)
    touschek_her: LossSourceConfig = field(default_factory=_touschek_her)
    beamgas_ler: LossSourceConfig = field(default_factory=_beamgas_ler)
    beamgas_her: LossSourceConfig = field(default_factory=_beamgas_her)
    digitizer: DigitizerConfig = field(default_factory=DigitizerConfig)
    detector: PxdDetectorConfig = field(default_factory=PxdDetectorConfig)

    def __post_init__(self):
        check_range("field_t", self.field_t, 0.1, 10.0, "T")


#: the loss-point sources of PxdSimConfig, in simulation order
LOSS_SOURCES = ("rbb", "synchrotron", "touschek_ler", "touschek_her", "beamgas_ler", "beamgas_her")
SOURCE_NAMES = ("two_photon",) + LOSS_SOURCES


def source_scales(cond: np.ndarray, cfg: PxdSimConfig) -> dict[str, float]:
    """Rate factor of every source for one event's conditions (shape (6,), CONDITION_NAMES)."""
    return {name: getattr(cfg, name).scaling.factor(cond) for name in SOURCE_NAMES}


# ----------------------------------------------------------------------------------------------
# deposits: straight segments in sensor-local coordinates
# ----------------------------------------------------------------------------------------------
@dataclass
class _Segments:
    """Charge deposits, one row per crossing (n,): sensor, centre (u, v) mm at mid-depth, projected
    path vector (du, dv) mm, total charge (e-)."""

    sensor: np.ndarray
    u: np.ndarray
    v: np.ndarray
    du: np.ndarray
    dv: np.ndarray
    charge: np.ndarray


def _moyal(rng: np.random.Generator, n: int, cap: float) -> np.ndarray:
    """Standard Moyal samples (mode 0): -ln(Z^2), Z ~ N(0, 1), capped at ``cap``."""
    z2 = np.square(rng.standard_normal(n))
    return np.minimum(-np.log(np.maximum(z2, 1e-300)), cap)


def _mip_charge(rng, path_um: np.ndarray, dig: DigitizerConfig) -> np.ndarray:
    """Charge (e-) of MIP crossings of 3-D path ``path_um`` in Si (Moyal fluctuation)."""
    f = 1.0 + dig.landau_width * _moyal(rng, len(path_um), dig.landau_max)
    return path_um * dig.mip_mpv_e_per_um * np.maximum(f, 0.3)


def _electron_range_um(e_kev: np.ndarray) -> np.ndarray:
    """CSDA range of electrons in silicon (Katz-Penfold), um, for energies in keV."""
    e = np.clip(e_kev, 0.1, 3000.0) * 1e-3  # MeV
    r_mg_cm2 = 412.0 * e ** (1.265 - 0.0954 * np.log(e))
    return r_mg_cm2 * 1e-3 / SI_DENSITY_G_CM3 * 1e4


# Mass attenuation of silicon (cm^2/g), photo-electric and incoherent (Compton), NIST XCOM
_XCOM_KEV = np.array([2, 3, 5, 8, 10, 15, 20, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500, 1000, 2000, 5000.0])
_XCOM_PE = np.array([2.7e3, 9.5e2, 2.45e2, 6.3e1, 3.34e1, 1.02e1, 4.3, 1.25, 0.51, 0.25, 0.14, 0.058, 0.029, 0.0085,
                     0.0036, 0.0011, 3e-4, 8e-5, 2e-5, 4e-6])
_XCOM_CO = np.array([0.03, 0.06, 0.11, 0.14, 0.15, 0.16, 0.17, 0.17, 0.17, 0.17, 0.17, 0.165, 0.16, 0.145, 0.13, 0.11,
                     0.087, 0.064, 0.045, 0.028])


def _xcom(e_kev: np.ndarray, table: np.ndarray) -> np.ndarray:
    return np.exp(np.interp(np.log(e_kev), np.log(_XCOM_KEV), np.log(table)))


@lru_cache(maxsize=32)
def _photon_table(e_min_kev: float, e_max_kev: float, index: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-CDF table of the energy of photons that *interact* in the sensor: a flux
    ~ E^-index between the bounds times the interaction probability 1 - exp(-mu rho t) of 75 um Si.
    Returns (cdf, log E) on a 400-point grid."""
    le = np.linspace(np.log(e_min_kev), np.log(e_max_kev), 400)
    e = np.exp(le)
    mu = _xcom(e, _XCOM_PE) + _xcom(e, _XCOM_CO)
    w = (1.0 - np.exp(-mu * SI_DENSITY_G_CM3 * geo.THICKNESS_MM * 0.1)) * e ** (1.0 - index)  # per unit log E
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(le))])
    return cdf / cdf[-1], le


def _photon_segments(rng, sensor, u, v, e_min_kev: float, e_max_kev: float, index: float, dig: DigitizerConfig) -> _Segments:
    """Photons interacting at (sensor, u, v): photo-effect (the electron takes the photon energy) or
    Compton scattering (recoil energy ~ uniform up to the Compton edge); the electron starts at a
    random depth in a random direction, travels min(CSDA range, distance to the surface) and
    deposits its energy in proportion to the path it had in silicon."""
    n = len(sensor)
    cdf, le = _photon_table(float(e_min_kev), float(e_max_kev), float(index))
    e_g = np.exp(np.interp(rng.random(n), cdf, le))
    pe = _xcom(e_g, _XCOM_PE)
    photo = rng.random(n) * (pe + _xcom(e_g, _XCOM_CO)) < pe
    k = e_g / (ELECTRON_MASS_MEV * 1e3)
    t_max = e_g * 2 * k / (1 + 2 * k)
    e_kev = np.where(photo, e_g, rng.random(n) * t_max)
    return _electron_segments(rng, sensor, u, v, e_kev, dig)


def _electron_segments(rng, sensor, u, v, e_kev: np.ndarray, dig: DigitizerConfig) -> _Segments:
    """Low-energy electrons (keV) starting at (sensor, u, v) at a random depth in a random
    direction: path = min(CSDA range, distance to the surface), charge ~ energy * path / range."""
    n = len(sensor)
    t_um = geo.THICKNESS_MM * 1e3
    rng_um = _electron_range_um(e_kev)
    depth = rng.random(n) * t_um
    cos_t = 2.0 * rng.random(n) - 1.0
    exit_um = np.where(cos_t > 0, t_um - depth, depth) / np.maximum(np.abs(cos_t), 1e-6)
    path = np.minimum(rng_um, exit_um)
    charge = e_kev * 1e3 / dig.pair_energy_ev * (path / rng_um)
    # multiple scattering curls a slow electron up: its projected extent is a fraction of its path
    proj_mm = path * np.sqrt(1.0 - cos_t**2) * (1e-3 * dig.electron_straightness)
    az = 2 * np.pi * rng.random(n)
    return _Segments(sensor, u, v, proj_mm * np.cos(az), proj_mm * np.sin(az), charge)


def _with_delta_rays(rng, seg: _Segments, path_um: np.ndarray, dig: DigitizerConfig) -> _Segments:
    """Add the hard collisions of MIP crossings as explicit delta electrons: per um of path,
    xi / T_cut of them above ``delta_cut_kev`` (Landau xi = ``delta_xi_kev_per_um``), energy
    spectrum ~ 1/T^2 up to ``delta_max_kev``, starting at a random point of the crossing. They make
    the Landau tail local (single pixels of high charge), as in silicon."""
    lam = path_um * dig.delta_xi_kev_per_um / dig.delta_cut_kev
    nd = rng.poisson(lam)
    idx = np.repeat(np.arange(len(nd)), nd)
    m = len(idx)
    if m == 0:
        return seg
    t_kev = np.minimum(dig.delta_cut_kev / (1.0 - rng.random(m)), dig.delta_max_kev)
    f = rng.random(m) - 0.5
    d = _electron_segments(rng, seg.sensor[idx], seg.u[idx] + f * seg.du[idx], seg.v[idx] + f * seg.dv[idx], t_kev, dig)
    return _concat([seg, d])


def _charged_segments(rng, sensor, u, v, max_incidence_deg: float, dig: DigitizerConfig) -> _Segments:
    """Straight MIP-like crossings with an isotropic-flux (cos-law) incidence angle."""
    n = len(sensor)
    cmin = np.cos(np.radians(max_incidence_deg))
    cos_t = np.sqrt(cmin**2 + (1 - cmin**2) * rng.random(n))
    tan_t = np.sqrt(1 - cos_t**2) / cos_t
    path_um = geo.THICKNESS_MM * 1e3 / cos_t
    proj = geo.THICKNESS_MM * tan_t
    az = 2 * np.pi * rng.random(n)
    seg = _Segments(sensor, u, v, proj * np.cos(az), proj * np.sin(az), _mip_charge(rng, path_um, dig))
    return _with_delta_rays(rng, seg, path_um, dig)


# ----------------------------------------------------------------------------------------------
# two-photon helices
# ----------------------------------------------------------------------------------------------
_PLANES = geo.ladder_planes()


def _two_photon_segments(rng, n: int, cfg: TwoPhotonConfig, field_t: float, dig: DigitizerConfig) -> _Segments:
    """Helices of ``n`` two-photon e+- intersected with the 20 ladder planes."""
    # pT above threshold (Pareto), CM pseudo-rapidity, then boost z and x
    pt = cfg.pt_min_mev * (1.0 - rng.random(n)) ** (-1.0 / (cfg.pt_power - 1.0))
    pt = np.minimum(pt, cfg.pt_max_mev)
    phi = 2 * np.pi * rng.random(n)
    eta = cfg.eta_sigma * rng.standard_normal(n)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(pt**2 + pz**2 + ELECTRON_MASS_MEV**2)
    bgz = cfg.boost_betagamma_z
    gz = np.sqrt(1 + bgz**2)
    pz, e = gz * pz + bgz * e, gz * e + bgz * pz
    px = px + cfg.boost_beta_x * e
    q = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    z0 = cfg.luminous_sigma_z_mm * rng.standard_normal(n)
    n_turns = np.minimum(rng.geometric(1.0 - cfg.turn_survival, n), cfg.max_turns)
    pt = np.hypot(px, py)
    phi = np.arctan2(py, px)
    tanl = pz / pt
    radius = pt / (0.3 * field_t)  # mm (pT in MeV, B in T)
    keep = 2 * radius > _PLANES["radius"].min() - 0.5
    pt, phi, tanl, radius, q, z0, n_turns = (a[keep] for a in (pt, phi, tanl, radius, q, z0, n_turns))
    s = -q  # sense of rotation seen from +z (B along +z): + counter-clockwise
    x0 = cfg.ip_x_mm
    cx = x0 - s * radius * np.sin(phi)
    cy = s * radius * np.cos(phi)
    nx, ny = np.cos(_PLANES["phi"]), np.sin(_PLANES["phi"])
    # distance of the circle centre from each plane n.x = r: (N, 20)
    d = cx[:, None] * nx[None, :] + cy[:, None] * ny[None, :] - _PLANES["radius"][None, :]
    ip, il = np.nonzero(np.abs(d) < radius[:, None])
    dd = d[ip, il]
    h = np.sqrt(radius[ip] ** 2 - dd**2)
    # two intersection points per (particle, plane)
    ip = np.concatenate([ip, ip])
    il = np.concatenate([il, il])
    dd = np.concatenate([dd, dd])
    h = np.concatenate([h, -h])
    tx, ty = -ny[il], nx[il]
    x = cx[ip] - dd * nx[il] + h * tx
    y = cy[ip] - dd * ny[il] + h * ty
    u = x * tx + y * ty - _PLANES["shift"][il]
    ok = np.abs(u) < 0.5 * geo.SENSOR_WIDTH_MM
    ip, il, x, y, u = ip[ok], il[ok], x[ok], y[ok], u[ok]
    # turning angle from the origin to the crossing, then every later turn
    a = np.arctan2(y - cy[ip], x - cx[ip]) - np.arctan2(-cy[ip], x0 - cx[ip])
    dphi = np.mod(s[ip] * a, 2 * np.pi)
    nt = n_turns[ip]
    rep = np.repeat(np.arange(len(ip)), nt)
    k = np.arange(len(rep)) - np.repeat(np.cumsum(nt) - nt, nt)
    ip, il, x, y, u, dphi = ip[rep], il[rep], x[rep], y[rep], u[rep], dphi[rep] + 2 * np.pi * k
    z = z0[ip] + radius[ip] * tanl[ip] * dphi
    zj, length = _PLANES["z_joint"][il], _PLANES["length"][il]
    fwd = (z >= zj) & (z < zj + length)
    bwd = (z < zj) & (z >= zj - length)
    ok = fwd | bwd
    ip, il, x, y, u, z, fwd = ip[ok], il[ok], x[ok], y[ok], u[ok], z[ok], fwd[ok]
    sensor = _PLANES["sensor1"][il] + np.where(fwd, 0, 1)
    v = z - geo.Z_CENTRE_MM[sensor]
    # direction at the crossing (unit 3-D), in local (u, v, w) components
    r = radius[ip]
    cosl = 1.0 / np.sqrt(1.0 + tanl[ip] ** 2)
    vx = s[ip] * (-(y - cy[ip])) / r
    vy = s[ip] * (x - cx[ip]) / r
    tx, ty, nxx, nyy = -ny[il], nx[il], nx[il], ny[il]
    du = cosl * (vx * tx + vy * ty)
    dv = cosl * tanl[ip]
    dw = np.abs(cosl * (vx * nxx + vy * nyy))
    t = geo.THICKNESS_MM
    path = t / np.maximum(dw, 1e-9)
    # a grazing helix leaves the slab after a chord of 2 sqrt(2 rho t), rho = R / cos^2(lambda)
    chord = 2.0 * np.sqrt(2.0 * (r / cosl**2) * t)
    path = np.minimum(path, chord)
    proj_u, proj_v = du * path, dv * path
    charge = _mip_charge(rng, path * 1e3, dig)
    return _with_delta_rays(rng, _Segments(sensor, u, v, proj_u, proj_v, charge), path * 1e3, dig)


# ----------------------------------------------------------------------------------------------
# loss-point sources: hit-density maps from the solid angle seen from the loss points
# ----------------------------------------------------------------------------------------------
_MAP_NU, _MAP_NV = 5, 32
_N_LOSS_POINTS = 4000


@lru_cache(maxsize=32)
def _hit_map(src: LossSourceConfig) -> np.ndarray:
    """Probability of each map cell (40 sensors x 5 (u) x 32 (v) cells of equal size) to receive a
    secondary, shape (40 * 5 * 32,), summing to 1. Built from a fixed quadrature of the loss
    distribution (deterministic, independent of any run seed)."""
    g = np.random.Generator(np.random.PCG64(np.random.SeedSequence(0x10550, spawn_key=(7,))))
    n = _N_LOSS_POINTS
    z = src.loss_z_mm + src.loss_z_sigma_mm * g.standard_normal(n)
    if src.loss_phi_sigma_deg >= 180.0:
        phi = 2 * np.pi * g.random(n)
    else:
        phi = np.radians(src.loss_phi_deg + src.loss_phi_sigma_deg * g.standard_normal(n))
        phi = phi + np.pi * (g.random(n) < src.opposite_fraction)
    sx, sy, sz = src.loss_radius_mm * np.cos(phi), src.loss_radius_mm * np.sin(phi), z
    s = np.repeat(np.arange(geo.N_SENSORS), _MAP_NU * _MAP_NV)
    iu = np.tile(np.repeat(np.arange(_MAP_NU), _MAP_NV), geo.N_SENSORS)
    iv = np.tile(np.arange(_MAP_NV), geo.N_SENSORS * _MAP_NU)
    uc = ((iu + 0.5) / _MAP_NU - 0.5) * geo.SENSOR_WIDTH_MM
    vc = ((iv + 0.5) / _MAP_NV - 0.5) * geo.ACTIVE_LENGTH_MM[s]
    area = geo.SENSOR_WIDTH_MM / _MAP_NU * geo.ACTIVE_LENGTH_MM[s] / _MAP_NV
    x, y, zc = geo.local_to_global(s, uc, vc)
    phis = geo.LADDER_PHI_RAD[s]
    dens = np.zeros(len(s))
    for c0 in range(0, n, 500):  # 8 blocks of loss points: (cells, 500) arrays
        dx = x[:, None] - sx[None, c0:c0 + 500]
        dy = y[:, None] - sy[None, c0:c0 + 500]
        dz = zc[:, None] - sz[None, c0:c0 + 500]
        r2 = dx * dx + dy * dy + dz * dz
        dn = np.abs(dx * np.cos(phis)[:, None] + dy * np.sin(phis)[:, None])
        dens += (dn / (r2 * np.sqrt(r2))).sum(axis=1)
    w = dens * area
    return w / w.sum()


def _loss_segments(rng, n: int, src: LossSourceConfig, dig: DigitizerConfig) -> _Segments:
    p = _hit_map(src)
    cell = np.searchsorted(np.cumsum(p), rng.random(n) * (1 - 1e-12))
    cell = np.minimum(cell, len(p) - 1)
    sensor = cell // (_MAP_NU * _MAP_NV)
    iu = (cell // _MAP_NV) % _MAP_NU
    iv = cell % _MAP_NV
    u = ((iu + rng.random(n)) / _MAP_NU - 0.5) * geo.SENSOR_WIDTH_MM
    v = ((iv + rng.random(n)) / _MAP_NV - 0.5) * geo.ACTIVE_LENGTH_MM[sensor]
    is_photon = rng.random(n) < src.photon_fraction
    a = _photon_segments(rng, sensor[is_photon], u[is_photon], v[is_photon], src.photon_min_kev, src.photon_max_kev, src.photon_spectral_index, dig)
    b = _charged_segments(rng, sensor[~is_photon], u[~is_photon], v[~is_photon], src.max_incidence_deg, dig)
    return _concat([a, b])


def _concat(parts: list[_Segments]) -> _Segments:
    return _Segments(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("sensor", "u", "v", "du", "dv", "charge")))


# ----------------------------------------------------------------------------------------------
# charge collection and digitization
# ----------------------------------------------------------------------------------------------
# per-sensor v-row layout as two blocks from the low-v edge: n1 rows of pitch p1, then pitch p2
_P1 = np.where(geo.FINE_AT_HIGH_V, np.where(geo.LAYER == 1, 0.060, 0.085), np.where(geo.LAYER == 1, 0.055, 0.070))
_P2 = np.where(geo.FINE_AT_HIGH_V, np.where(geo.LAYER == 1, 0.055, 0.070), np.where(geo.LAYER == 1, 0.060, 0.085))
_N1 = np.where(geo.FINE_AT_HIGH_V, 512, 256)
_CHARGE_BITS = 21  # charge packed below the pixel key: 1/4 e- units up to 2**21 / 4 = 524 k e- per group


def _collect(rng, seg: _Segments, dig: DigitizerConfig, extra_keys: np.ndarray, extra_q: np.ndarray):
    """Split every segment into charge groups along its projected path, diffuse them, and sum the
    charge per pixel (together with ``extra_keys`` / ``extra_q``: noise and hot pixels).
    Returns (sorted unique pixel keys (int64), charge in e- (float64))."""
    length_um = np.hypot(seg.du, seg.dv) * 1e3
    ng = np.maximum(np.ceil(length_um / dig.group_step_um).astype(np.int64), dig.min_groups)
    ng = np.minimum(ng, 2000)
    n = int(ng.sum())
    first = np.cumsum(ng) - ng
    # random shares of the segment's charge (local ionisation fluctuations), normalised per segment
    share = rng.gamma(dig.group_shape, 1.0, n) if dig.group_shape != 1.0 else rng.standard_exponential(n)
    tot = np.add.reduceat(share, first) if len(first) else np.zeros(0)
    q = np.repeat(seg.charge / tot, ng) * share
    # position along the path: (j + U) / ng - 1/2 for group j of ng
    j = np.arange(n) - np.repeat(first, ng)
    inv_ng = np.repeat(1.0 / ng, ng)
    tpos = (j + rng.random(n)) * inv_ng - 0.5
    diff = rng.standard_normal((2, n)) * (dig.diffusion_sigma_um * 1e-3)
    s = seg.sensor
    u = np.repeat(seg.u + 0.5 * geo.SENSOR_WIDTH_MM, ng) + tpos * np.repeat(seg.du, ng) + diff[0]
    x = np.repeat(seg.v + 0.5 * geo.ACTIVE_LENGTH_MM[s], ng) + tpos * np.repeat(seg.dv, ng) + diff[1]
    # v row: n1 rows of pitch p1 from the low-v edge, then rows of pitch p2
    p1, n1 = np.repeat(_P1[s], ng), np.repeat(_N1[s], ng)
    row = np.minimum(x / p1, n1) + np.maximum(x - n1 * p1, 0.0) / np.repeat(_P2[s], ng)
    uc = np.floor(u * (1.0 / geo.U_PITCH_MM))
    vc = np.floor(row)
    ok = (uc >= 0) & (uc < geo.N_UCELLS) & (x >= 0) & (vc < geo.N_VCELLS)
    keys = np.repeat(s.astype(np.int64) * geo.N_PIXELS, ng)[ok] + vc[ok].astype(np.int64) * geo.N_UCELLS + uc[ok].astype(np.int64)
    keys = np.concatenate([keys, extra_keys])
    q = np.concatenate([q[ok], extra_q])
    # one sort of (key, charge) packed in int64 instead of unique + inverse (2x faster)
    qi = np.minimum(np.rint(q * 4.0), 2**_CHARGE_BITS - 1).astype(np.int64)
    packed = np.sort((keys << _CHARGE_BITS) | qi)
    k = packed >> _CHARGE_BITS
    if len(k) == 0:
        return k, np.zeros(0)
    start = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1]]))
    charge = np.add.reduceat((packed & (2**_CHARGE_BITS - 1)).astype(np.float64), start) * 0.25
    return k[start], charge


def _digitize(rng, keys: np.ndarray, charge_e: np.ndarray, dig: DigitizerConfig, det: PxdDetector):
    """Pixel charges (e-) -> ADU with noise, pedestal clip and zero suppression.
    Returns (keys, adu uint8) of the fired pixels."""
    adu = charge_e * (1.0 / dig.electrons_per_adu) + dig.noise_adu * rng.standard_normal(len(keys))
    ped = det.pedestal_adu[keys].astype(np.float64)
    val = np.minimum(np.rint(ped + adu), dig.adc_max_adu) - ped
    fired = (val >= dig.threshold_adu) & ~det.dead[keys]
    return keys[fired], val[fired].astype(np.uint8)


def simulate_pxd_event(rng: np.random.Generator, cond: np.ndarray, cfg: PxdSimConfig | None = None,
                       det: PxdDetector | None = None) -> dict[str, np.ndarray]:
    """Simulate one frame (20 us) of PXD background.

    Args:
        rng: the event's generator (``event_rng(seed, "pxd.simulate", i)``).
        cond: beam conditions, shape (6,), order of ``CONDITION_NAMES`` (scale factors vs nominal).
        cfg: simulator config (default: calibrated nominal).
        det: detector payload (default: the one of ``cfg.detector``).
    Returns:
        dict of ``sensor`` (uint8), ``ucell`` (uint16), ``vcell`` (uint16), ``charge`` (uint8, ADU
        >= threshold), each shape (n_fired,), unique pixels sorted by (sensor, vcell, ucell).
    """
    cfg = cfg or PxdSimConfig()
    det = det or default_detector(cfg.detector)
    cond = np.asarray(cond, dtype=np.float64)
    if cond.shape != (len(CONDITION_NAMES),) or not np.all(np.isfinite(cond)) or np.any(cond[:5] < 0):
        raise ConfigError(f"conditions: expected {len(CONDITION_NAMES)} finite non-negative values {CONDITION_NAMES}, got {cond!r}")
    dig = cfg.digitizer
    scales = source_scales(cond, cfg)
    parts = [_two_photon_segments(rng, rng.poisson(cfg.two_photon.particles_per_event * scales["two_photon"]),
                                  cfg.two_photon, cfg.field_t, dig)]
    for name in LOSS_SOURCES:
        src = getattr(cfg, name)
        n = rng.poisson(src.hits_per_event * scales[name])
        if n:
            parts.append(_loss_segments(rng, n, src, dig))
    # random noise hits and hot pixels: charge added on top of whatever the pixel collected
    n_noise = rng.poisson(dig.noise_hit_probability * N_ALL_PIXELS)
    nkeys = rng.integers(0, N_ALL_PIXELS, n_noise)
    nq = (dig.threshold_adu + rng.exponential(1.5, n_noise)) * dig.electrons_per_adu
    hot = det.hot_keys[rng.random(len(det.hot_keys)) < det.config.hot_fire_probability]
    hq = det.config.hot_charge_adu * dig.electrons_per_adu * np.maximum(1 + 0.25 * rng.standard_normal(len(hot)), 0)
    keys, charge = _collect(rng, _concat(parts), dig, np.concatenate([nkeys, hot]), np.concatenate([nq, hq]))
    keys, adu = _digitize(rng, keys, charge, dig, det)
    ucell = keys % geo.N_UCELLS
    rest = keys // geo.N_UCELLS
    return {
        "sensor": (rest // geo.N_VCELLS).astype(np.uint8),
        "ucell": ucell.astype(np.uint16),
        "vcell": (rest % geo.N_VCELLS).astype(np.uint16),
        "charge": adu,
    }


# ----------------------------------------------------------------------------------------------
# streams and files
# ----------------------------------------------------------------------------------------------
def _source(conditions) -> ConditionsSource:
    if isinstance(conditions, ConditionsSource):
        return conditions
    return resolve_conditions(conditions)


def iter_pxd_chunks(
    n_events: int,
    seed: int,
    *,
    conditions: str | Path | ConditionsConfig | ConditionsSource | None = None,
    config: PxdSimConfig | None = None,
    chunk_size: int = 100,
    start: int = 0,
) -> Iterator[tuple[PxdDigits, Conditions]]:
    """Simulate events ``start .. start + n_events - 1`` in chunks of ``chunk_size``.

    Event ``i`` draws its conditions from ``event_rng(seed, "conditions", i)`` and everything else
    from ``event_rng(seed, "pxd.simulate", i)``, so the output does not depend on ``chunk_size``
    or ``start``. Memory is bounded by one chunk.

    Args:
        conditions: None (nominal :class:`ConditionsConfig`), a YAML path, a data file whose
            ``conditions`` group is reused event by event, a ConditionsConfig or a ConditionsSource.
    Yields:
        (PxdDigits of the chunk, Conditions (c, 6) float32).
    """
    for name, v, lo in (("n_events", n_events, 0), ("chunk_size", chunk_size, 1), ("start", start, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ConfigError(f"{name}: {v!r} is not an integer >= {lo}")
    cfg = config or PxdSimConfig()
    det = default_detector(cfg.detector)
    src = _source(conditions)
    for c0 in range(start, start + n_events, chunk_size):
        c1 = min(c0 + chunk_size, start + n_events)
        cond = np.empty((c1 - c0, len(CONDITION_NAMES)), dtype=np.float32)
        events = []
        for j, i in enumerate(range(c0, c1)):
            # float32 first: re-simulating with conditions read back from a file is identical
            cond[j] = src.get(i, event_rng(seed, CONDITIONS_DOMAIN, i)).astype(np.float32)
            events.append(simulate_pxd_event(event_rng(seed, PXD_DOMAIN, i), cond[j].astype(np.float64), cfg, det))
        yield PxdDigits.from_events(events), Conditions(cond, CONDITION_NAMES)


def simulate_pxd(
    n_events: int,
    seed: int,
    out: str | Path,
    *,
    conditions=None,
    config: PxdSimConfig | None = None,
    chunk_size: int = 100,
    command: str = "",
) -> Path:
    """Simulate ``n_events`` frames into ``out`` (``.h5`` / ``.root``; pxd + conditions groups).

    Written atomically with a progress bar; the file attributes record the detector payload
    version and the resolved simulator config. Returns the output path.
    """
    from b2bkg.io import FileWriter

    cfg = config or PxdSimConfig()
    out = Path(out)
    from b2bkg.core.provenance import simulator_hash

    attrs = {"pxd_detector": default_detector(cfg.detector).version, "pxd_sim_config": to_dict(cfg),
             "simulator_hash": simulator_hash("pxd", to_dict(cfg))}
    with FileWriter(out, seed=seed, command=command, attrs=attrs) as w:
        bar = progress(total=n_events, desc="simulate pxd", unit="event")
        try:
            for digits, cond in iter_pxd_chunks(n_events, seed, conditions=conditions, config=cfg, chunk_size=chunk_size):
                w.append(pxd=digits, conditions=cond)
                bar.update(digits.n_events)
        finally:
            bar.close()
    return out
