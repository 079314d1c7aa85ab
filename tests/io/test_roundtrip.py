"""HDF5 <-> ROOT round trips, streaming reads, atomic writes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import uproot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from b2bkg.io import EclWaveforms, FileWriter, convert, open_file, read_pxd, read_smc, write_file

from b2bkg.testing import random_pxd, random_smc

SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 6))
def test_pxd_roundtrip_h5_root_h5(tmp_path, seed, n):
    rng = np.random.default_rng(seed)
    d = random_pxd(rng, n)
    a, b, c = tmp_path / f"a{seed}.h5", tmp_path / f"b{seed}.root", tmp_path / f"c{seed}.h5"
    write_file(a, seed=seed, pxd=d)
    convert(a, b)
    convert(b, c)
    assert read_pxd(c) == d
    assert read_pxd(b) == d


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 5))
def test_smc_roundtrip_h5_root_h5(tmp_path, seed, n):
    rng = np.random.default_rng(seed)
    s = random_smc(rng, n)
    a, b, c = tmp_path / f"a{seed}.h5", tmp_path / f"b{seed}.root", tmp_path / f"c{seed}.h5"
    write_file(a, seed=seed, smc=s)
    convert(a, b)
    convert(b, c)
    assert read_smc(c) == s


def test_ecl_and_conditions_roundtrip(tmp_path, tiny_ecl, tiny_conditions):
    cond = tiny_conditions.slice(0, 2)
    a, b, c = tmp_path / "a.h5", tmp_path / "b.root", tmp_path / "c.h5"
    write_file(a, seed=1, ecl=tiny_ecl, conditions=cond)
    convert(a, b)
    convert(b, c)
    with open_file(c) as f:
        assert f.groups == ("ecl", "conditions")
        assert f.read_ecl() == tiny_ecl
        assert f.read_conditions() == cond


def test_plain_h5py_and_uproot_see_the_same_hits(tmp_path, tiny_pxd):
    h, r = tmp_path / "x.h5", tmp_path / "x.root"
    write_file(h, seed=7, command="test", pxd=tiny_pxd)
    write_file(r, seed=7, command="test", pxd=tiny_pxd)
    with h5py.File(h) as f:
        assert f.attrs["schema"] == "b2bkg.pxd.digits/1"
        assert int(f.attrs["n_events"]) == tiny_pxd.n_events and int(f.attrs["seed"]) == 7
        np.testing.assert_array_equal(f["pxd/charge"][...], tiny_pxd.charge)
        np.testing.assert_array_equal(f["pxd/offsets"][...], tiny_pxd.offsets)
    with uproot.open(r) as f:
        t = f["pxd"]
        assert t.num_entries == tiny_pxd.n_events
        ch = t["charge"].array(library="np")
        np.testing.assert_array_equal(np.concatenate(list(ch)), tiny_pxd.charge)
        assert '"seed": 7' in str(f["b2bkg_meta"])


@pytest.mark.parametrize("suffix", [".h5", ".root"])
def test_chunked_reading_equals_whole_reading(tmp_path, rng, suffix):
    from b2bkg.io import PxdDigits

    d = random_pxd(rng, 23)
    p = tmp_path / f"x{suffix}"
    with FileWriter(p, seed=1) as w:  # written in uneven chunks
        for a, b in [(0, 5), (5, 6), (6, 23)]:
            w.append(pxd=d.slice(a, b))
    with open_file(p) as f:
        assert f.n_events == 23
        assert PxdDigits.concat(list(f.iter_pxd(chunk=4))) == d
        assert f.read_pxd(5, 6) == d.slice(5, 6)


def test_reading_one_event_does_not_read_the_whole_file(tmp_path, rng, monkeypatch):
    d = random_pxd(rng, 50, 200)
    p = tmp_path / "x.h5"
    write_file(p, seed=1, pxd=d)
    with open_file(p) as f:
        ds = f._r.f["pxd/charge"]
        n_hits = ds.shape[0]
        ev = f.read_pxd(5, 6)
        assert len(ev.charge) == d.hits_per_event()[5] < n_hits
    assert ev == d.slice(5, 6)


@pytest.mark.parametrize("suffix", [".h5", ".root"])
def test_interrupted_write_leaves_no_file(tmp_path, tiny_pxd, suffix):
    p = tmp_path / f"x{suffix}"
    with pytest.raises(RuntimeError):
        with FileWriter(p, seed=1) as w:
            w.append(pxd=tiny_pxd)
            raise RuntimeError("killed")
    assert not p.exists()
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_process_leaves_no_file(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    p = tmp_path / "x.h5"
    code = f"""
import numpy as np, time
from b2bkg.io import FileWriter, PxdDigits
with FileWriter({str(p)!r}, seed=1) as w:
    w.append(pxd=PxdDigits([0, 1], [1], [1], [1], [9]))
    print("ready", flush=True)
    time.sleep(60)
"""
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.05)
    assert not p.exists()


def test_ecl_file_streams_per_event(tmp_path, rng):
    w = EclWaveforms(rng.integers(2900, 3100, (3, 8736, 31)))
    p = tmp_path / "e.root"
    write_file(p, seed=1, ecl=w)
    with open_file(p) as f:
        assert [c.n_events for c in f.iter_ecl(chunk=2)] == [2, 1]
        assert f.read_ecl(2, 3) == w.slice(2, 3)
