"""Overlay of PXD digits and ECL waveforms, and the streaming ``b2bkg overlay``."""

from __future__ import annotations

import numpy as np
import pytest

from b2bkg.core.errors import ConfigError
from b2bkg.io import Conditions, EclWaveforms, PxdDigits, open_file, write_file
from b2bkg.overlay import overlay_ecl, overlay_files, overlay_pxd


def test_pxd_charges_add_and_saturate():
    # event 0: pixel (0, 5, 5) in both (200 + 100 -> 255), (0, 6, 5) signal only, (3, 1, 1) bkg only
    # event 1: the same pixel key as event 0's first must not mix across events
    sig = PxdDigits([0, 2, 3], sensor=[0, 0, 0], ucell=[5, 6, 5], vcell=[5, 5, 5], charge=[200, 20, 30])
    bkg = PxdDigits([0, 2, 3], sensor=[3, 0, 0], ucell=[1, 5, 5], vcell=[1, 5, 5], charge=[9, 100, 40])
    out = overlay_pxd(sig, bkg)
    assert out.offsets.tolist() == [0, 3, 4]
    assert out.sensor.tolist() == [0, 0, 3, 0]
    assert out.ucell.tolist() == [5, 6, 1, 5]
    assert out.charge.tolist() == [255, 20, 9, 70]
    assert out.charge.dtype == np.uint8
    out.validate()


def test_pxd_exact_sum_below_saturation_and_signal_provenance():
    sig = PxdDigits([0, 3], sensor=[1, 1, 1], ucell=[0, 0, 249], vcell=[0, 0, 767], charge=[10, 11, 7])
    bkg = PxdDigits([0, 1], sensor=[1], ucell=[0], vcell=[0], charge=[12])
    out, hit = overlay_pxd(sig, bkg, return_signal_hit=True)
    assert out.charge.tolist() == [33, 7]  # two signal deposits + background in one pixel
    assert hit.tolist() == [1, 2]
    only_bkg, hit2 = overlay_pxd(PxdDigits.empty(1), bkg, return_signal_hit=True)
    assert only_bkg == bkg and hit2.tolist() == [-1]


def test_pxd_event_count_mismatch_is_an_error():
    with pytest.raises(ConfigError, match="events"):
        overlay_pxd(PxdDigits.empty(2), PxdDigits.empty(3))


def test_ecl_adds_and_clamps_to_18_bits():
    bkg = np.full((1, 8736, 31), 3000, np.int32)
    sig = np.zeros((1, 8736, 31), np.int32)
    sig[0, 0, 10] = 300_000  # above 2**18 - 1 after the pedestal
    sig[0, 1, 10] = -5000  # an undershoot larger than the pedestal clamps at 0
    sig[0, 2, 12] = 1234
    out = overlay_ecl(EclWaveforms(sig), EclWaveforms(bkg)).waveforms
    assert out[0, 0, 10] == 2**18 - 1
    assert out[0, 1, 10] == 0
    assert out[0, 2, 12] == 4234
    assert out[0, 3, 0] == 3000 and out.dtype == np.int32


def _files(tmp_path, n_sig, n_bkg):
    rng = np.random.default_rng(3)
    from b2bkg.testing import random_pxd

    sig = random_pxd(rng, n_sig, 20)
    bkg = random_pxd(rng, n_bkg, 30)
    names = ("lumi", "her_current", "ler_current", "her_vacuum", "ler_vacuum", "injection")
    sp = write_file(tmp_path / "sig.h5", seed=1, pxd=sig, conditions=Conditions(np.ones((n_sig, 6)), names), attrs={"content": "signal"})
    bp = write_file(tmp_path / "bkg.h5", seed=2, pxd=bkg, conditions=Conditions(np.full((n_bkg, 6), 2.0), names))
    return sig, bkg, sp, bp


def test_overlay_files_streams_and_matches_in_memory(tmp_path):
    sig, bkg, sp, bp = _files(tmp_path, 5, 5)
    res = overlay_files(sp, bp, tmp_path / "out.h5", chunk=2)
    assert res.n_events == 5 and res.n_recycled == 0 and res.overlaid == ("pxd",)
    with open_file(tmp_path / "out.h5") as f:
        assert f.read_pxd() == overlay_pxd(sig, bkg)
        assert f.meta["content"] == "overlay"
        assert np.all(f.read_conditions().values == 2.0)  # the conditions behind the background


def test_overlay_files_reuse(tmp_path):
    sig, bkg, sp, bp = _files(tmp_path, 5, 2)
    with pytest.raises(ConfigError, match="--reuse"):
        overlay_files(sp, bp, tmp_path / "out.h5")
    res = overlay_files(sp, bp, tmp_path / "out.h5", reuse=True, chunk=3)
    assert res.n_recycled == 3 and any("recycled" in n for n in res.notes)
    cyc = PxdDigits.concat([bkg, bkg, bkg.slice(0, 1)])
    with open_file(tmp_path / "out.h5") as f:
        assert f.read_pxd() == overlay_pxd(sig, cyc)
        assert int(f.meta["n_recycled"]) == 3


def test_overlay_cli(tmp_path, capsys):
    from b2bkg.cli.main import main

    _, _, sp, bp = _files(tmp_path, 3, 3)
    main(["--quiet", "overlay", "--signal", str(sp), "--background", str(bp), "--out", str(tmp_path / "o.h5")])
    assert "3 events" in capsys.readouterr().out
