"""PXD geometry: 40 DEPFET sensors, their placement and pixel <-> local <-> global conversions.

Facts (shared/REFERENCE.md): layer 1 at 14 mm with 8 ladders (phi = 0, 45, ... 315 deg), layer 2 at
22 mm with 12 ladders (phi = 0, 30, ... 330 deg), two sensors per ladder, 250 (u, r-phi) x 768
(v, z) pixels, u pitch 50 um, v pitch 512 x 60 um + 256 x 55 um (layer 1) and 512 x 85 um +
256 x 70 um (layer 2), 75 um sensitive thickness, ladders shifted by 3.5 mm (windmill).

Placement along z (modelling choices, tagged as in REFERENCE.md):

* [src] The module centres are at z = +48.013 / -20.013 mm (layer 1, sensor 1 / 2) and
  +61.513 / -23.513 mm (layer 2). Their separations (68.026 and 85.026 mm) are the module lengths
  (68 and 85 mm DEPFET modules), so the two modules of a ladder abut at the *joint*
  z = +14.0 mm (layer 1) and +19.0 mm (layer 2).
* [assume] The active area sits at the joint end of each module (the readout chips occupy the
  outer end), so the active areas of a ladder are contiguous: layer 1 covers z = -30.8 .. 58.8 mm,
  layer 2 z = -42.44 .. 80.44 mm (theta ~ 13-156 deg, the PXD acceptance).
* [assume] Sensor 1 is the forward (+z) sensor. The finer-pitch rows are at the joint end of each
  sensor (the ladder centre, facing the interaction region); with v along +z for every sensor,
  the fine rows are ``vcell 0..255`` on sensor 1 and ``vcell 512..767`` on sensor 2.

Frames: local ``u`` runs along the ladder's r-phi direction t = (-sin phi, cos phi, 0), ``v`` along
+z, ``w`` along the outward normal n = (cos phi, sin phi, 0); u = v = w = 0 is the centre of the
active area, which sits at ``radius * n + windmill_shift * t + z_centre * z``. ``ucell`` counts
from u = -6.25 mm, ``vcell`` from the low-z edge.

Sensor index (0..39) = numeric order of (layer, ladder, sensor): 1.1.1, 1.1.2, 1.2.1, ..., 2.12.2.

Example:
    >>> vxd_id(17), sensor_index(2, 1, 2)
    ('2.1.2', 17)
    >>> u, v = pixel_to_local(np.array([0]), np.array([0]), np.array([0]))
    >>> np.allclose(local_to_pixel(np.array([0]), u, v), ([0], [0]))
    True
"""

from __future__ import annotations

import numpy as np

from b2bkg.core.errors import ConfigError

__all__ = [
    "N_SENSORS", "N_UCELLS", "N_VCELLS", "N_PIXELS", "THICKNESS_MM", "U_PITCH_MM", "SENSOR_WIDTH_MM",
    "LAYER", "LADDER", "SENSOR", "LADDER_PHI_RAD", "RADIUS_MM", "WINDMILL_SHIFT_MM", "Z_CENTRE_MM",
    "MODULE_Z_MM", "ACTIVE_LENGTH_MM", "FINE_AT_HIGH_V", "N_LADDERS", "LADDER_RADIUS_MM",
    "vxd_id", "sensor_index", "v_pitch_mm", "v_edges_mm", "pixel_to_local", "local_to_pixel",
    "local_to_global", "global_to_local", "pixel_to_global", "pixel_area_mm2", "ladder_planes",
]

N_SENSORS = 40
N_UCELLS = 250
N_VCELLS = 768
N_PIXELS = N_UCELLS * N_VCELLS  # per sensor
THICKNESS_MM = 0.075
U_PITCH_MM = 0.050
SENSOR_WIDTH_MM = N_UCELLS * U_PITCH_MM  # 12.5 mm

# per layer: (n_ladders, radius mm, windmill shift mm, module z of sensor 1, sensor 2 (mm),
#             coarse rows, coarse pitch mm, fine rows, fine pitch mm)
_LAYERS = {
    1: (8, 14.0, 3.5, (48.013, -20.013), 512, 0.060, 256, 0.055),
    2: (12, 22.0, 3.5, (61.513, -23.513), 512, 0.085, 256, 0.070),
}
N_LADDERS = {layer: spec[0] for layer, spec in _LAYERS.items()}
LADDER_RADIUS_MM = {layer: spec[1] for layer, spec in _LAYERS.items()}


def _build():
    rows = []
    for layer, (nlad, r, shift, zmod, nc, pc, nf, pf) in _LAYERS.items():
        length = nc * pc + nf * pf
        joint = 0.5 * (zmod[0] + zmod[1])
        for ladder in range(1, nlad + 1):
            phi = 2 * np.pi * (ladder - 1) / nlad
            for sensor in (1, 2):
                zc = joint + 0.5 * length if sensor == 1 else joint - 0.5 * length
                rows.append((layer, ladder, sensor, phi, r, shift, zc, zmod[sensor - 1], length, sensor == 2))
    cols = list(zip(*rows))
    return [np.array(c) for c in cols]


(LAYER, LADDER, SENSOR, LADDER_PHI_RAD, RADIUS_MM, WINDMILL_SHIFT_MM, Z_CENTRE_MM, MODULE_Z_MM,
 ACTIVE_LENGTH_MM, FINE_AT_HIGH_V) = _build()
LAYER = LAYER.astype(np.int64)
LADDER = LADDER.astype(np.int64)
SENSOR = SENSOR.astype(np.int64)
FINE_AT_HIGH_V = FINE_AT_HIGH_V.astype(bool)
for _a in (LAYER, LADDER, SENSOR, LADDER_PHI_RAD, RADIUS_MM, WINDMILL_SHIFT_MM, Z_CENTRE_MM, MODULE_Z_MM,
           ACTIVE_LENGTH_MM, FINE_AT_HIGH_V):
    _a.setflags(write=False)

# per-sensor pitch table: coarse pitch, fine pitch (mm), number of fine rows
_COARSE = np.array([_LAYERS[int(l)][5] for l in LAYER])
_FINE = np.array([_LAYERS[int(l)][7] for l in LAYER])
_NFINE = np.array([_LAYERS[int(l)][6] for l in LAYER])
_NCOARSE = N_VCELLS - _NFINE


def vxd_id(index) -> str | list[str]:
    """VxdID string ("layer.ladder.sensor") of sensor index (or indices) 0..39."""
    if np.ndim(index):
        return [vxd_id(int(i)) for i in np.asarray(index).ravel()]
    i = int(index)
    if not 0 <= i < N_SENSORS:
        raise ConfigError(f"sensor index {i} out of range 0..{N_SENSORS - 1}")
    return f"{LAYER[i]}.{LADDER[i]}.{SENSOR[i]}"


def sensor_index(layer, ladder, sensor):
    """Sensor index 0..39 of (layer, ladder, sensor); vectorized (arrays broadcast)."""
    layer, ladder, sensor = (np.asarray(x, dtype=np.int64) for x in (layer, ladder, sensor))
    ok = ((layer == 1) & (ladder >= 1) & (ladder <= 8)) | ((layer == 2) & (ladder >= 1) & (ladder <= 12))
    ok &= (sensor == 1) | (sensor == 2)
    if not np.all(ok):
        raise ConfigError(f"no PXD sensor {layer}.{ladder}.{sensor} (layers 1, 2; ladders 1-8 / 1-12; sensors 1, 2)")
    out = np.where(layer == 1, 0, 16) + 2 * (ladder - 1) + (sensor - 1)
    return int(out) if out.ndim == 0 else out


def _check_sensor(sensor) -> np.ndarray:
    s = np.asarray(sensor, dtype=np.int64)
    if s.size and (s.min() < 0 or s.max() >= N_SENSORS):
        raise ConfigError(f"sensor index out of range 0..{N_SENSORS - 1} (got {int(s.min())}..{int(s.max())})")
    return s


def v_pitch_mm(sensor, vcell) -> np.ndarray:
    """v pitch (mm) of row ``vcell`` on ``sensor`` (arrays broadcast)."""
    s = _check_sensor(sensor)
    v = np.asarray(vcell, dtype=np.int64)
    fine = np.where(FINE_AT_HIGH_V[s], v >= _NCOARSE[s], v < _NFINE[s])
    return np.where(fine, _FINE[s], _COARSE[s])


def v_edges_mm(sensor: int) -> np.ndarray:
    """Row edges of one sensor in local v (mm), shape (769,), increasing from -L/2 to +L/2."""
    s = int(_check_sensor(sensor))
    p = v_pitch_mm(s, np.arange(N_VCELLS))
    return np.concatenate([[0.0], np.cumsum(p)]) - 0.5 * ACTIVE_LENGTH_MM[s]


def _v_low_edge(s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Distance (mm) of the low edge of row v from the low-v edge of the sensor."""
    hi = FINE_AT_HIGH_V[s]
    nf, nc, pf, pc = _NFINE[s], _NCOARSE[s], _FINE[s], _COARSE[s]
    # fine rows first (sensor 1): rows < nf fine; fine rows last (sensor 2): rows >= nc fine
    first = np.where(v < nf, v * pf, nf * pf + (v - nf) * pc)
    last = np.where(v < nc, v * pc, nc * pc + (v - nc) * pf)
    return np.where(hi, last, first)


def pixel_to_local(sensor, ucell, vcell) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centre in local coordinates.

    Args:
        sensor, ucell, vcell: integer arrays of equal (broadcastable) shape.
    Returns:
        (u, v) in mm, float64, same shape.
    """
    s = _check_sensor(sensor)
    uc = np.asarray(ucell, dtype=np.int64)
    vc = np.asarray(vcell, dtype=np.int64)
    u = (uc + 0.5) * U_PITCH_MM - 0.5 * SENSOR_WIDTH_MM
    v = _v_low_edge(s, vc) + 0.5 * v_pitch_mm(s, vc) - 0.5 * ACTIVE_LENGTH_MM[s]
    return u, v


def local_to_pixel(sensor, u_mm, v_mm) -> tuple[np.ndarray, np.ndarray]:
    """Pixel containing a local point; (-1, -1) where the point is outside the active area.

    Args:
        sensor: sensor indices, int array.
        u_mm, v_mm: local coordinates (mm), float arrays of the same shape.
    Returns:
        (ucell, vcell), int64 arrays.
    """
    s = _check_sensor(sensor)
    u = np.asarray(u_mm, dtype=np.float64)
    x = np.asarray(v_mm, dtype=np.float64) + 0.5 * ACTIVE_LENGTH_MM[s]  # from the low-v edge
    uc = np.floor((u + 0.5 * SENSOR_WIDTH_MM) / U_PITCH_MM).astype(np.int64)
    nf, nc, pf, pc = _NFINE[s], _NCOARSE[s], _FINE[s], _COARSE[s]
    b_first = nf * pf  # fine block first
    v_first = np.where(x < b_first, x / pf, nf + (x - b_first) / pc)
    b_last = nc * pc
    v_last = np.where(x < b_last, x / pc, nc + (x - b_last) / pf)
    vc = np.floor(np.where(FINE_AT_HIGH_V[s], v_last, v_first)).astype(np.int64)
    bad = (uc < 0) | (uc >= N_UCELLS) | (vc < 0) | (vc >= N_VCELLS) | (x < 0)
    return np.where(bad, -1, uc), np.where(bad, -1, vc)


def _frame(s: np.ndarray):
    phi = LADDER_PHI_RAD[s]
    c, sn = np.cos(phi), np.sin(phi)
    centre_x = RADIUS_MM[s] * c - WINDMILL_SHIFT_MM[s] * sn
    centre_y = RADIUS_MM[s] * sn + WINDMILL_SHIFT_MM[s] * c
    return c, sn, centre_x, centre_y, Z_CENTRE_MM[s]


def local_to_global(sensor, u_mm, v_mm, w_mm=0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local (u, v, w) (mm) -> global (x, y, z) (mm), vectorized."""
    s = _check_sensor(sensor)
    c, sn, cx, cy, cz = _frame(s)
    u, v, w = (np.asarray(a, dtype=np.float64) for a in (u_mm, v_mm, w_mm))
    return cx - u * sn + w * c, cy + u * c + w * sn, cz + v


def global_to_local(sensor, x_mm, y_mm, z_mm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global (x, y, z) (mm) -> local (u, v, w) (mm) of ``sensor``, vectorized."""
    s = _check_sensor(sensor)
    c, sn, cx, cy, cz = _frame(s)
    dx, dy = np.asarray(x_mm, dtype=np.float64) - cx, np.asarray(y_mm, dtype=np.float64) - cy
    return -dx * sn + dy * c, np.asarray(z_mm, dtype=np.float64) - cz, dx * c + dy * sn


def pixel_to_global(sensor, ucell, vcell) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel centre in global coordinates (mm)."""
    u, v = pixel_to_local(sensor, ucell, vcell)
    return local_to_global(sensor, u, v)


def pixel_area_mm2(sensor, vcell) -> np.ndarray:
    """Area of pixel row ``vcell`` of ``sensor`` (mm^2)."""
    return U_PITCH_MM * v_pitch_mm(sensor, vcell)


def ladder_planes() -> dict[str, np.ndarray]:
    """The 20 ladder planes (8 of layer 1, then 12 of layer 2).

    Returns:
        dict with ``layer`` (20,), ``phi`` (20,) rad, ``radius`` (20,) mm (normal distance of the
        plane from the beam axis), ``shift`` (20,) mm (windmill offset of the active area along u),
        ``z_joint`` (20,) mm, ``length`` (20,) mm (active length of one sensor) and ``sensor1``
        (20,) the index of the ladder's forward sensor (its backward sensor is ``sensor1 + 1``).
    """
    s1 = np.flatnonzero(SENSOR == 1)
    return {
        "layer": LAYER[s1], "phi": LADDER_PHI_RAD[s1], "radius": RADIUS_MM[s1], "shift": WINDMILL_SHIFT_MM[s1],
        "z_joint": Z_CENTRE_MM[s1] - 0.5 * ACTIVE_LENGTH_MM[s1], "length": ACTIVE_LENGTH_MM[s1], "sensor1": s1,
    }
