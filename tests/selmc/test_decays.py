"""The decay table parsed from decaylanguage's DECAY_BELLE2.DEC."""

from __future__ import annotations

import numpy as np
import pytest

from b2bkg.core.errors import ConfigError
from b2bkg.selmc import decays
from b2bkg.selmc.decays import KIND_PARTONS, load_decay_table


@pytest.fixture(scope="module")
def table():
    return load_decay_table()


def test_y4s_channels(table):
    ch = table.channels("Upsilon(4S)")
    assert ch[0][1] == ["B+", "B-"] and ch[0][0] == pytest.approx(0.515, abs=2e-3)
    assert ch[1][1] == ["B0", "anti-B0"] and ch[1][0] == pytest.approx(0.483, abs=2e-3)


def test_branching_fractions_normalized(table):
    p = np.nonzero(table.ch_count > 0)[0]
    sums = np.bincount(table.ch_parent, weights=table.ch_bf, minlength=table.n_particles)[p]
    np.testing.assert_allclose(sums, 1.0, atol=1e-9)
    last = table.ch_first[p] + table.ch_count[p] - 1
    assert np.all(table.ch_cum[last] == 1.0)


def test_charge_conjugates_and_aliases(table):
    b0 = {tuple(c[1]) for c in table.channels("B0")}
    b0bar = {tuple(c[1]) for c in table.channels("anti-B0")}
    assert ("D*-", "pi+") in b0 and ("D*+", "pi-") in b0bar
    # aliases are separate rows with the PDG code of their base particle
    assert table.pdg[table.pid("K*L")] == table.pdg[table.pid("K*0")] == 313
    assert table.pdg[table.pid("anti-B0")] == -511 and table.charge3[table.pid("B+")] == 3


def test_charge_conserved_in_every_explicit_channel(table):
    c = np.nonzero(table.ch_kind == 0)[0]
    seg = np.repeat(c, table.ch_dcount[c])
    d = np.concatenate([table.dau[table.ch_dfirst[i]: table.ch_dfirst[i] + table.ch_dcount[i]] for i in c])
    q = np.bincount(seg, weights=table.charge3[d], minlength=len(table.ch_parent))[c]
    np.testing.assert_array_equal(q, table.charge3[table.ch_parent[c]])


def test_quark_level_channels_and_properties(table):
    b = table.pid("anti-B0")
    kinds = table.ch_kind[table.ch_first[b]: table.ch_first[b] + table.ch_count[b]]
    bf = table.channel_bfs("anti-B0")
    assert 0.3 < bf[kinds == KIND_PARTONS].sum() < 0.6  # inclusive PYTHIA modes are kept
    ks = table.pid("K_S0")
    assert table.ctau[ks] == pytest.approx(2.684, rel=1e-3) and not table.stable[ks]
    assert table.stable[table.pid("K_L0")] and table.stable[table.pid("pi+")]
    rho = table.pid("rho0")
    assert table.shape[rho] == decays.SHAPE_BW and table.mass_lo[rho] >= 2 * 0.1395


def test_cache_roundtrip_and_parse_time(tmp_path, monkeypatch):
    monkeypatch.setenv("B2BKG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(decays, "_TABLES", {})
    t1 = load_decay_table()
    assert t1.meta["parse_s"] > 0 and list(tmp_path.glob("decay_table_*.npz"))
    monkeypatch.setattr(decays, "_TABLES", {})
    t2 = load_decay_table()
    assert t2.meta["parse_s"] == 0.0
    for k, v in t1.arrays().items():
        np.testing.assert_array_equal(v, getattr(t2, k), err_msg=k)


def test_unknown_name_and_missing_file(table, tmp_path):
    with pytest.raises(ConfigError, match="unknown particle name"):
        table.pid("not-a-particle")
    with pytest.raises(ConfigError, match="not found"):
        load_decay_table(tmp_path / "missing.DEC")
