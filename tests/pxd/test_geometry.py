"""PXD geometry facts and conversions."""

import numpy as np
import pytest

from b2bkg.core.errors import ConfigError
from b2bkg.pxd import geometry as g


def test_forty_sensors_in_numeric_order():
    ids = g.vxd_id(range(g.N_SENSORS))
    assert len(ids) == 40 and ids[0] == "1.1.1" and ids[1] == "1.1.2" and ids[15] == "1.8.2"
    assert ids[16] == "2.1.1" and ids[34] == "2.10.1" and ids[39] == "2.12.2"
    keys = [tuple(int(x) for x in s.split(".")) for s in ids]
    assert keys == sorted(keys)  # numeric, not text order ("2.10" after "2.9")
    assert g.sensor_index(2, 10, 1) == 34
    np.testing.assert_array_equal(g.sensor_index(g.LAYER, g.LADDER, g.SENSOR), np.arange(40))
    with pytest.raises(ConfigError):
        g.sensor_index(1, 9, 1)


def test_layers_ladders_radii():
    assert (g.LAYER == 1).sum() == 16 and (g.LAYER == 2).sum() == 24
    np.testing.assert_allclose(np.degrees(g.LADDER_PHI_RAD[g.LAYER == 1][::2]), np.arange(0, 360, 45))
    np.testing.assert_allclose(np.degrees(g.LADDER_PHI_RAD[g.LAYER == 2][::2]), np.arange(0, 360, 30))
    assert set(g.RADIUS_MM[g.LAYER == 1]) == {14.0} and set(g.RADIUS_MM[g.LAYER == 2]) == {22.0}


@pytest.mark.parametrize("sensor,length", [(0, 44.8), (1, 44.8), (16, 61.44), (39, 61.44)])
def test_pitches_sum_to_active_length(sensor, length):
    p = g.v_pitch_mm(sensor, np.arange(g.N_VCELLS))
    assert p.sum() == pytest.approx(length)
    assert g.ACTIVE_LENGTH_MM[sensor] == pytest.approx(length)
    assert (p == p.min()).sum() == 256 and (p == p.max()).sum() == 512
    e = g.v_edges_mm(sensor)
    assert e[0] == pytest.approx(-length / 2) and e[-1] == pytest.approx(length / 2)
    assert g.N_UCELLS * g.U_PITCH_MM == pytest.approx(12.5)


def test_fine_rows_at_the_joint_and_sensors_contiguous():
    # sensor .1 forward, its fine rows at low v; sensor .2 backward, fine rows at high v
    assert g.v_pitch_mm(0, 0) == pytest.approx(0.055) and g.v_pitch_mm(1, 767) == pytest.approx(0.055)
    assert g.v_pitch_mm(16, 0) == pytest.approx(0.070) and g.v_pitch_mm(17, 767) == pytest.approx(0.070)
    for s1 in (0, 16):
        top_of_bwd = g.Z_CENTRE_MM[s1 + 1] + g.ACTIVE_LENGTH_MM[s1 + 1] / 2
        low_of_fwd = g.Z_CENTRE_MM[s1] - g.ACTIVE_LENGTH_MM[s1] / 2
        assert top_of_bwd == pytest.approx(low_of_fwd)
        # module centres (REFERENCE.md) are symmetric about the joint
        assert (g.MODULE_Z_MM[s1] + g.MODULE_Z_MM[s1 + 1]) / 2 == pytest.approx(low_of_fwd)


def test_round_trips_pixel_local_global():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 40, 5000)
    u = rng.integers(0, 250, 5000)
    v = rng.integers(0, 768, 5000)
    lu, lv = g.pixel_to_local(s, u, v)
    uu, vv = g.local_to_pixel(s, lu, lv)
    np.testing.assert_array_equal(uu, u)
    np.testing.assert_array_equal(vv, v)
    x, y, z = g.local_to_global(s, lu, lv, 0.02)
    a, b, c = g.global_to_local(s, x, y, z)
    np.testing.assert_allclose(a, lu, atol=1e-9)
    np.testing.assert_allclose(b, lv, atol=1e-9)
    np.testing.assert_allclose(c, 0.02, atol=1e-9)
    # the sensor plane sits at its radius: normal distance of every pixel centre from the axis
    nx, ny = np.cos(g.LADDER_PHI_RAD[s]), np.sin(g.LADDER_PHI_RAD[s])
    x0, y0, _ = g.pixel_to_global(s, u, v)
    np.testing.assert_allclose(x0 * nx + y0 * ny, g.RADIUS_MM[s], atol=1e-9)


def test_outside_points_map_to_minus_one():
    uu, vv = g.local_to_pixel(np.array([0, 0, 20]), np.array([7.0, 0.0, 0.0]), np.array([0.0, 23.0, -31.0]))
    np.testing.assert_array_equal(uu, [-1, -1, -1])
    np.testing.assert_array_equal(vv, [-1, -1, -1])
