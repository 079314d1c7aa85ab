"""Sparse digits <-> dense images and the log transform (b2bkg.pxd.images)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from b2bkg.core.errors import ConfigError, SchemaError
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits
from b2bkg.pxd.images import (
    crop_rows, dense_to_digits, digits_to_dense, digits_to_sensor_images, from_adu, pad_rows, to_adu,
)

NPIX = N_SENSORS * N_UCELLS * N_VCELLS


def random_digits(n_events=3, hits=(50, 0, 200), seed=0, min_charge=7) -> PxdDigits:
    """Events with distinct pixels, hits sorted by (sensor, u, v) as dense_to_digits returns them."""
    rng = np.random.default_rng(seed)
    events = []
    for n in hits[:n_events]:
        flat = np.sort(rng.choice(NPIX, size=n, replace=False))
        s, rest = np.divmod(flat, N_UCELLS * N_VCELLS)
        u, v = np.divmod(rest, N_VCELLS)
        events.append({"sensor": s, "ucell": u, "vcell": v, "charge": rng.integers(min_charge, 256, n)})
    return PxdDigits.from_events(events)


def test_transform_endpoints_and_formula():
    x = from_adu(torch.tensor([0, 7, 255]))
    assert x[0] == -1.0 and x[2] == pytest.approx(1.0, abs=1e-6)
    assert x[1] == pytest.approx(2 * math.log(8) / math.log(256) - 1, abs=1e-6)  # = -0.25


def test_inverse_is_exact_on_every_adu_value():
    adu = torch.arange(256)
    assert torch.equal(to_adu(from_adu(adu), threshold_adu=1), adu.to(torch.uint8))
    thr = to_adu(from_adu(adu))  # default 7 ADU
    assert torch.equal(thr[:7], torch.zeros(7, dtype=torch.uint8))
    assert torch.equal(thr[7:], adu[7:].to(torch.uint8))
    assert to_adu(torch.tensor([-5.0, 5.0]), threshold_adu=1).tolist() == [0, 255]  # clipped


@pytest.mark.parametrize("bad", [0, 256, 7.5, True, "7"])
def test_threshold_validated(bad):
    with pytest.raises(ConfigError, match="threshold_adu"):
        to_adu(torch.zeros(2), threshold_adu=bad)


def test_round_trip_sparse_dense_sparse():
    d = random_digits()
    x = digits_to_dense(d, slice(None))
    assert x.shape == (3, 40, 256, 768) and x.dtype == torch.float32
    assert torch.all(x[..., 250:, :] == -1.0)  # padding rows are 0 ADU
    back = dense_to_digits(to_adu(crop_rows(x)))
    assert back == d
    assert back.hits_per_event().tolist() == [50, 0, 200]


def test_event_selection_forms_and_values():
    d = random_digits()
    full = digits_to_dense(d, [0, 1, 2], transform=False, pad_to=None)
    assert full.shape == (3, 40, 250, 768)
    assert torch.equal(digits_to_dense(d, 2, transform=False, pad_to=None)[0], full[2])
    assert torch.equal(digits_to_dense(d, np.array([2, 0]), transform=False, pad_to=None), full[[2, 0]])
    e = d.event(2)
    assert torch.equal(full[2, e["sensor"].astype(int), e["ucell"].astype(int), e["vcell"].astype(int)],
                       torch.from_numpy(e["charge"].astype(np.float32)))
    assert float(full.sum()) == float(d.charge.sum())
    with pytest.raises(IndexError, match="event 3 out of range"):
        digits_to_dense(d, [0, 3])


def test_sensor_subset_keeps_requested_order():
    d = random_digits(hits=(500, 400, 300))
    full = digits_to_dense(d, slice(None))
    sub = digits_to_dense(d, slice(None), sensors=[5, 2])
    assert sub.shape == (3, 2, 256, 768)
    assert torch.equal(sub[:, 0], full[:, 5]) and torch.equal(sub[:, 1], full[:, 2])
    with pytest.raises(ValueError, match="sensors"):
        digits_to_dense(d, 0, sensors=[40])


def test_repeated_pixels_add_and_clip():
    d = PxdDigits([0, 3], sensor=[1, 1, 1], ucell=[4, 4, 4], vcell=[9, 9, 9], charge=[100, 120, 50])
    adu = digits_to_dense(d, 0, transform=False, pad_to=None)
    assert float(adu[0, 1, 4, 9]) == 255.0 and float(adu.sum()) == 255.0


def test_coarse_grid_is_max_of_each_bin():
    d = random_digits(hits=(3000, 10, 10))
    fine = digits_to_dense(d, 0, transform=False, pad_to=None).numpy()
    coarse = digits_to_dense(d, 0, out_shape=(125, 384), transform=False, pad_to=None).numpy()
    ref = fine.reshape(1, 40, 125, 2, 384, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(coarse, ref)
    padded = digits_to_dense(d, 0, out_shape=(125, 384), pad_to=128)
    assert padded.shape == (1, 40, 128, 384) and torch.all(padded[..., 125:, :] == -1)
    with pytest.raises(ValueError, match="out_shape"):
        digits_to_dense(d, 0, out_shape=(100, 768))


def test_dense_to_digits_numpy_float_and_threshold():
    img = np.zeros((2, 40, 250, 768), np.float32)
    img[0, 39, 249, 767] = 6.4  # rounds to 6 -> below 7
    img[0, 0, 0, 0] = 6.6  # rounds to 7 -> kept
    img[1, 3, 10, 20] = 300.0  # clipped to 255
    img[1, 3, 10, 19] = 12.0
    d = dense_to_digits(img)
    d.validate()
    assert d.offsets.tolist() == [0, 1, 3]
    assert d.charge.tolist() == [7, 12, 255]
    assert d.vcell.tolist() == [0, 19, 20]  # ordered by (event, sensor, u, v)
    assert dense_to_digits(img, threshold_adu=13).n_hits == 1
    assert dense_to_digits(np.zeros((1, 40, 250, 768), np.uint8)).offsets.tolist() == [0, 0]


def test_dense_to_digits_shape_error():
    with pytest.raises(SchemaError, match=r"\(B, 40, 250, 768\)"):
        dense_to_digits(torch.zeros(1, 40, 256, 768))


def test_pad_and_crop_inverse():
    x = torch.rand(2, 1, 250, 768)
    p = pad_rows(x)
    assert p.shape == (2, 1, 256, 768) and torch.equal(crop_rows(p), x)
    with pytest.raises(ValueError, match="rows"):
        crop_rows(torch.zeros(1, 200, 768))


def test_sensor_image_pairs_match_dense_and_repeat():
    d = random_digits(hits=(3000, 5, 2000))
    full = digits_to_dense(d, slice(None))
    ev, se = [2, 0, 2, 2, 1], [7, 7, 39, 7, 0]
    imgs = digits_to_sensor_images(d, ev, se)
    assert imgs.shape == (5, 1, 256, 768)
    for n, (e, s) in enumerate(zip(ev, se)):
        assert torch.equal(imgs[n, 0], full[e, s])
    coarse = digits_to_sensor_images(d, [2], [7], out_shape=(125, 384), pad_to=None, transform=False)
    assert torch.equal(coarse[0], digits_to_dense(d, 2, sensors=[7], out_shape=(125, 384), pad_to=None, transform=False)[0])
    with pytest.raises(ValueError, match="sensor_idx"):
        digits_to_sensor_images(d, [0, 1], [3])
