"""PXD regions of interest: geometry of the rectangles, the post-filter, ROI sampling of pxd-fast,
overlay --roi, and track pulls unchanged by the ROI readout."""

from __future__ import annotations

import numpy as np
import pytest

from b2bkg.io import PxdDigits
from b2bkg.overlay.roi import (
    RoiBackground, RoiConfig, Rois, filter_digits, in_roi, rois_from_digits, rois_from_prediction, rois_from_tracks,
    sample_fast_roi,
)
from b2bkg.pxd import geometry as geo
from b2bkg.validation.tracking import TrackingConfig, reconstruct, simulate_signal

FAST_SET = ["calib_iters=1", "calib_events=3", "calib_occ_events=6", "latent_rank=2", "chunk_events=4"]


def test_in_roi_bounds_inclusive_and_per_event_sensor():
    r = Rois(2, event=[1, 0], sensor=[5, 5], umin=[10, 0], umax=[20, 0], vmin=[100, 0], vmax=[110, 0])
    assert r.event.tolist() == [0, 1]  # sorted by (event, sensor)
    d = PxdDigits([0, 1, 6], sensor=[5, 5, 5, 5, 5, 6], ucell=[10, 10, 20, 21, 15, 15], vcell=[100, 100, 110, 105, 99, 105],
                  charge=[9] * 6)
    assert in_roi(d, r).tolist() == [False, True, True, False, False, False]
    f = filter_digits(d, r)
    assert f.offsets.tolist() == [0, 0, 2] and f.ucell.tolist() == [10, 20]
    assert r.covered_pixels().tolist() == [1, 11 * 11]
    two = Rois(1, event=[0, 0, 0], sensor=[5, 5, 6], umin=[10, 15, 10], umax=[20, 25, 20], vmin=[100, 105, 100],
               vmax=[110, 115, 110])
    assert two.covered_pixels().tolist() == [3 * 121 - 36]  # the overlap of the first two counts once


def test_roi_width_follows_the_basf2_formula():
    cfg = RoiConfig()
    s = np.array([20, 20])
    cov = np.zeros((2, 2, 2))
    cov[1] = np.eye(2) * 1.0  # 1 mm errors: capped at 5 mm
    r = rois_from_prediction([0, 0], s, np.zeros((2, 2)), cov, 1, cfg)
    nu = r.umax - r.umin + 1
    # sigma 0: full width 10 x 0.2 mm = 2 mm = 40 pixels of 50 um (+1 for the edge pixel); capped: 5 mm = 100
    a, b = sorted(nu.tolist())
    assert 40 <= a <= 42 and 100 <= b <= 102
    off = rois_from_prediction([0], [20], [[50.0, 0.0]], np.zeros((1, 2, 2)), 1, cfg)  # far off the sensor
    assert off.n_rois == 0
    edge = rois_from_prediction([0], [20], [[0.5 * geo.SENSOR_WIDTH_MM, 0.0]], np.zeros((1, 2, 2)), 1, cfg)
    assert edge.umax.tolist() == [249] and 229 <= int(edge.umin[0]) <= 231  # half an ROI: 1 mm = 20 pixels


@pytest.fixture(scope="module")
def signal():
    return simulate_signal(3, seed=2, config=TrackingConfig(), tracks_per_event=25)


def test_rois_from_tracks_contain_the_signal_and_pulls_unchanged(signal):
    from b2bkg.pxd.simulate import iter_pxd_chunks

    rois = rois_from_tracks(signal)
    assert rois.n_events == 3 and rois.n_rois >= 2 * signal.n_tracks * 0.9
    assert in_roi(signal.digits, rois).mean() > 0.9
    assert 0.002 < rois.area_fraction() < 0.05
    bkg = PxdDigits.concat([d for d, _ in iter_pxd_chunks(3, 5)])
    small = filter_digits(bkg, rois)
    assert small.n_hits < 0.1 * bkg.n_hits
    full, roi = reconstruct(signal, bkg), reconstruct(signal, small)
    # the ROIs (+-5 sigma of the SVD extrapolation, >= 1 mm) hold the attachment windows: same hits, same fits
    assert np.array_equal(full.attached, roi.attached) and np.array_equal(full.wrong, roi.wrong)
    assert np.allclose(full.pulls[full.ok], roi.pulls[full.ok])


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    from b2bkg.pxd.simulate import simulate_pxd
    from b2bkg.training.trainer import train

    tmp = tmp_path_factory.mktemp("roi_fast")
    simulate_pxd(3, 11, tmp / "train.h5")
    train("pxd-fast", tmp / "train.h5", tmp / "run", config="small", overrides=FAST_SET, seed=3)
    return tmp / "run"


@pytest.fixture(scope="module")
def train_conditions(fast_run):
    """The 3 training events' conditions: a model fitted on 3 events must not extrapolate."""
    return str(fast_run.parent / "train.h5")


def test_roi_sampling_over_the_whole_pxd_is_the_full_sampler(fast_run):
    from b2bkg.core.seeding import event_rng
    from b2bkg.generate import load_run
    from b2bkg.pxd.models.fast import SAMPLE_DOMAIN, sample_fast_event

    run = load_run(fast_run, "cpu")
    t, cfg = run.modules["model"].tables(), run.cfg
    # rectangles a little beyond every sensor: no cluster is cut (a cluster centred near an edge may
    # have its box off the sensor: inside the sensor's own rectangle it would be cut, changing the
    # random stream though not the distribution), so the draws are those of the full sampler
    everything = {"sensor": np.arange(40), "umin": np.full(40, -30), "umax": np.full(40, 280), "vmin": np.full(40, -30),
                  "vmax": np.full(40, 800)}
    cond = np.ones(6)
    cond[5] = 0.0
    full = sample_fast_event(t, cfg, cond, event_rng(1, SAMPLE_DOMAIN, 0))
    roi, counts = sample_fast_roi(t, cfg, cond, event_rng(1, SAMPLE_DOMAIN, 0), everything)
    for k in ("sensor", "ucell", "vcell", "charge"):
        assert np.array_equal(full[k], roi[k])
    assert counts["clusters_built"] == counts["clusters"] > 0


def test_roi_sampling_matches_full_events_inside_the_rois(fast_run, signal, train_conditions):
    from b2bkg.overlay.background import ModelBackground

    n = 3
    rois = rois_from_tracks(signal)
    mb = ModelBackground(fast_run, seed=7, conditions=train_conditions)
    rb = RoiBackground(mb, rois)
    assert rb.mode == "roi-sampling"
    sampled = PxdDigits.concat([rb.read(0, 2), rb.read(2, 3)])
    assert in_roi(sampled, rois).all()
    assert rb.counts["clusters_built"] < 0.2 * rb.counts["clusters"]
    # full events of many seeds, filtered: the same mean number of hits inside the ROIs
    filt = [filter_digits(ModelBackground(fast_run, seed=s, conditions=train_conditions).read("pxd", 0, n), rois).n_hits
            for s in range(8, 14)]
    roi_s = [RoiBackground(ModelBackground(fast_run, seed=s, conditions=train_conditions), rois).read(0, n).n_hits
             for s in range(20, 26)]
    a, b = np.mean(filt), np.mean(roi_s)
    err = np.hypot(np.std(filt, ddof=1), np.std(roi_s, ddof=1)) / np.sqrt(6)
    assert abs(a - b) < 4 * err + 0.05 * a
    # a file source is post-filtered
    assert RoiBackground(object(), rois).mode == "post-filter"


def test_overlay_files_roi(tmp_path, fast_run, signal, train_conditions):
    from b2bkg.cli.main import main
    from b2bkg.io import Conditions, FileWriter, open_file, read_conditions
    from b2bkg.overlay import overlay_files

    sp = tmp_path / "sig.h5"
    with FileWriter(sp, seed=1) as w:
        w.append(pxd=signal.digits, conditions=Conditions(*read_conditions(train_conditions)))
    res = overlay_files(sp, fast_run, tmp_path / "o.h5", seed=2, roi=True)
    assert any("ROIs from signal-clusters" in s for s in res.notes) and any("ROI sampling built" in s for s in res.notes)
    rois = rois_from_digits(signal.digits)
    with open_file(tmp_path / "o.h5") as f:
        out = f.read_pxd()
        assert f.meta["roi_mode"] == "roi-sampling" and f.meta["roi_source"] == "signal-clusters"
    assert out.n_hits > signal.digits.n_hits
    assert in_roi(out, rois).all()  # background only inside, and the signal clusters are inside by construction
    main(["--quiet", "overlay", "--signal", str(sp), "--background", str(fast_run), "--out", str(tmp_path / "c.h5"), "--roi",
          "--seed", "2"])
    with open_file(tmp_path / "c.h5") as f:
        assert f.read_pxd() == out
