"""Bad input gets one specific, one-line error naming the file, the dataset and the problem."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from b2bkg.core.errors import SchemaError
from b2bkg.io import PxdDigits, SmcEvents, open_file, read_pxd, read_smc, write_file


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("suffix", [".h5", ".root"])
def test_truncated_file(tmp_path, tiny_pxd, suffix):
    p = tmp_path / f"x{suffix}"
    write_file(p, seed=1, pxd=tiny_pxd)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(SchemaError) as e:
        read_pxd(p)
    msg = one_line(e)
    assert str(p) in msg and ("truncated" in msg or "corrupt" in msg)


def test_wrong_schema_tag(tmp_path, tiny_pxd):
    p = tmp_path / "x.h5"
    write_file(p, seed=1, pxd=tiny_pxd)
    with h5py.File(p, "a") as f:
        f.attrs["schema"] = "b2bkg.pxd.digits/99"
    with pytest.raises(SchemaError, match="unknown schema tag 'b2bkg.pxd.digits/99'") as e:
        open_file(p)
    one_line(e)


def test_not_a_b2bkg_file(tmp_path):
    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:
        f["a"] = np.arange(3)
    with pytest.raises(SchemaError, match="missing root attribute 'schema'"):
        open_file(p)


def _rewrite(p, dataset, values):
    with h5py.File(p, "a") as f:
        del f[dataset]
        f[dataset] = values


def test_wrong_dtype(tmp_path, tiny_pxd):
    p = tmp_path / "x.h5"
    write_file(p, seed=1, pxd=tiny_pxd)
    _rewrite(p, "pxd/charge", tiny_pxd.charge.astype(np.float32))
    with pytest.raises(SchemaError, match=r"\[pxd/charge\]: dtype float32 where uint8 is required") as e:
        open_file(p)
    one_line(e)


def test_sensor_id_40(tmp_path, tiny_pxd):
    p = tmp_path / "x.h5"
    write_file(p, seed=1, pxd=tiny_pxd)
    bad = tiny_pxd.sensor.copy()
    bad[-1] = 40
    _rewrite(p, "pxd/sensor", bad)
    with pytest.raises(SchemaError, match=r"\[pxd/sensor\]: value 40 out of range 0..39") as e:
        read_pxd(p)
    one_line(e)


def test_non_monotone_offsets(tmp_path, rng):
    from b2bkg.testing import random_pxd

    d = random_pxd(rng, 5, 20)
    p = tmp_path / "x.h5"
    write_file(p, seed=1, pxd=d)
    off = d.offsets.copy()
    off[2], off[3] = off[3] + 1, off[2]
    _rewrite(p, "pxd/offsets", off)
    with pytest.raises(SchemaError, match=r"\[pxd/offsets\]: not monotone") as e:
        open_file(p)
    one_line(e)


def test_nan_in_smc_momenta(tmp_path, tiny_smc):
    p = tmp_path / "x.h5"
    write_file(p, seed=1, smc=tiny_smc)
    px = tiny_smc.particles["px"].copy()
    px[0] = np.nan
    _rewrite(p, "smc/px", px)
    with pytest.raises(SchemaError, match=r"\[smc/px\]: non-finite value nan") as e:
        read_smc(p)
    one_line(e)


def test_writer_refuses_invalid_data(tmp_path):
    with pytest.raises(SchemaError, match="zero charge"):
        write_file(tmp_path / "x.h5", pxd=PxdDigits([0, 1], [0], [0], [0], [0]))
    assert not (tmp_path / "x.h5").exists()


def test_unknown_suffix(tmp_path, tiny_pxd):
    with pytest.raises(SchemaError, match="unknown file suffix '.txt'"):
        write_file(tmp_path / "x.txt", pxd=tiny_pxd)


def test_mother_outside_event(tmp_path):
    from b2bkg.io.events import SMC_PARTICLE_FIELDS

    parts = {k: np.zeros(2) for k in SMC_PARTICLE_FIELDS}
    parts["mother"] = np.array([-1, 5])
    with pytest.raises(SchemaError, match="mother index 5"):
        SmcEvents([0, 2], parts).validate()
