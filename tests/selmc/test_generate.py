"""Event generation: conservation laws, tree consistency, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from b2bkg.core.errors import ConfigError
from b2bkg.selmc.generate import SAMPLES
from b2bkg.selmc.simulate import CLOSE, OPEN, decay_string, decay_tokens, iter_smc_chunks, simulate_smc

from ._helpers import vertex_sums

STABLE = {11, 12, 13, 14, 16, 22, 130, 211, 321, 2112, 2212}


@pytest.fixture(scope="module")
def samples():
    return {s: next(iter_smc_chunks(60, 7, sample=s, chunk_size=60, skim=False)) for s in SAMPLES}


@pytest.mark.parametrize("sample", SAMPLES)
def test_conservation_at_every_vertex(samples, sample):
    ev = samples[sample]
    ev.validate()
    p4, q3, s, sq, ndau, gm, has = vertex_sums(ev)
    parton = np.isin(np.abs(ev.particles["pdg"]), [1, 2, 3, 4, 21])
    check = (ndau > 0) & ~parton
    assert check.sum() > 3 * ev.n_events
    dev = np.abs(s[check] - p4[check]).max(1) / np.maximum(1.0, p4[check, 3])
    assert dev.max() < 2e-6 * 8, dev.max()  # float32 storage: a few ulps of the energy
    np.testing.assert_array_equal(sq[check], q3[check])
    # leaves are detector-stable particles (or documentation partons of continuum events)
    leaves = (ndau == 0) & ~parton
    assert set(np.unique(np.abs(ev.particles["pdg"][leaves]))) <= STABLE
    # every unstable hadron decayed: no K_S, pi0, D among the leaves
    assert not np.isin(np.abs(ev.particles["pdg"][leaves]), [310, 111, 411, 421, 511, 521, 15]).any()


@pytest.mark.parametrize("sample", ["mixed", "ccbar", "taupair"])
def test_mother_indices_time_and_flight_direction(samples, sample):
    ev = samples[sample]
    P = ev.particles
    p4, q3, s, sq, ndau, gm, has = vertex_sums(ev)
    local = np.arange(len(gm)) - ev.offsets[np.repeat(np.arange(ev.n_events), np.diff(ev.offsets))]
    assert (P["mother"][has] < local[has]).all()  # mothers come before daughters
    assert (P["time"][has] >= P["time"][gm[has]] - 1e-7).all()
    d = np.stack([P["vx"], P["vy"], P["vz"]], 1)[has].astype(np.float64) - np.stack([P["vx"], P["vy"], P["vz"]], 1)[gm[has]]
    pm = p4[gm[has], :3]
    dist = np.linalg.norm(d, axis=1)
    far = dist > 1e-3  # displaced decays (cm): parallel to the mother's momentum
    cos = (d[far] * pm[far]).sum(1) / (dist[far] * np.linalg.norm(pm[far], axis=1))
    assert far.sum() > 0 and (cos > 0.999).all()
    # time of flight consistent with the distance: v = |p|/E * c
    beta = np.linalg.norm(pm[far], axis=1) / p4[gm[has], 3][far]
    dt = (P["time"][has] - P["time"][gm[has]])[far]
    np.testing.assert_allclose(dist[far], beta * dt * 29.9792458, rtol=2e-3, atol=2e-4)


def test_event_structure(samples):
    m = samples["mixed"]
    first = m.offsets[:-1]
    assert (m.particles["pdg"][first] == 300553).all() and (m.particles["mother"][first] == -1).all()
    bb = np.sort(np.abs(m.particles["pdg"][first + 1]))
    assert (bb == 511).all()
    c = samples["charged"]
    assert set(np.abs(c.particles["pdg"][c.offsets[:-1] + 1])) == {521}
    u = samples["uubar"]
    assert (u.particles["pdg"][u.offsets[:-1]] == 10022).all() and (u.particles["pdg"][u.offsets[:-1] + 3] == 92).all()
    # Y(4S) four-momentum: sqrt(s) ~ 10.58 GeV with ~5 MeV spread, boost along +z with the crossing-angle px
    e, pz, px = (m.particles[k][first].astype(np.float64) for k in ("energy", "pz", "px"))
    roots = np.sqrt(e**2 - pz**2 - px**2 - m.particles["py"][first].astype(np.float64) ** 2)
    assert abs(roots.mean() - 10.579) < 0.003 and 0.002 < roots.std() < 0.009
    assert 2.9 < pz.mean() < 3.1 and 0.3 < px.mean() < 0.6
    # mixing: some events carry two B0 or two anti-B0
    pair = m.particles["pdg"][first + 1] * m.particles["pdg"][first + 2]
    assert (pair > 0).sum() >= 1 and (pair < 0).sum() > 0.6 * m.n_events


def test_same_seed_same_events_and_chunk_independence():
    a = next(iter_smc_chunks(30, 3, sample="ccbar", chunk_size=30, skim=False))
    b = iter_smc_chunks(30, 3, sample="ccbar", chunk_size=7, skim=False)
    from b2bkg.io.events import SmcEvents

    assert SmcEvents.concat(list(b)) == a
    c = next(iter_smc_chunks(30, 4, sample="ccbar", chunk_size=30, skim=False))
    assert not (c.offsets.shape == a.offsets.shape and np.array_equal(c.particles["px"], a.particles["px"]))
    # a window of events equals the same events generated from the start
    d = next(iter_smc_chunks(10, 3, sample="ccbar", chunk_size=10, start=20, skim=False))
    assert d == a.slice(20, 30)
    np.testing.assert_array_equal(d.per_event["event_id"], np.arange(20, 30))


def test_decay_tokens_and_string(samples):
    ev = samples["mixed"]
    off, tok = decay_tokens(ev)
    assert len(off) == ev.n_events + 1
    n_part = np.diff(ev.offsets)
    is_p = (tok != OPEN) & (tok != CLOSE)
    ev_of_tok = np.repeat(np.arange(ev.n_events), np.diff(off))
    np.testing.assert_array_equal(np.bincount(ev_of_tok, weights=is_p, minlength=ev.n_events), n_part)
    np.testing.assert_array_equal(np.bincount(ev_of_tok, weights=tok == OPEN), np.bincount(ev_of_tok, weights=tok == CLOSE))
    s = decay_string(ev, 0)
    assert s.startswith("300553 ( ") and s.endswith(" )") and s.count("(") == s.count(")")


def test_simulate_writes_file(tmp_path):
    from b2bkg.io import open_file, read_smc

    p = simulate_smc(25, 2, tmp_path / "smc.h5", sample="mixed", oracle_repeats=2, chunk_size=10, command="test")
    ev = read_smc(p)
    assert ev.n_events == 25
    for k in ("event_id", "n_tracks", "n_clusters", "e_visible", "mbc_fei_b0", "passed_fei_bplus", "pass_prob_fei_b0", "tag_p_fei_bplus"):
        assert k in ev.per_event
    assert set(np.unique(ev.per_event["pass_prob_fei_b0"])) <= {0.0, 0.5, 1.0}
    with open_file(p) as f:
        assert f.meta["sample"] == "mixed" and f.meta["seed"] == 2
    with pytest.raises(ConfigError, match="--sample"):
        simulate_smc(5, 1, tmp_path / "x.h5", sample="bbbar")
