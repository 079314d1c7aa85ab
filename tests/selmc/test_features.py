"""Network inputs of selective MC: vocabulary, padding, tree structure, decay tokens."""

from __future__ import annotations

import numpy as np
import pytest

from b2bkg.core.errors import ConfigError
from b2bkg.io.events import SmcEvents
from b2bkg.selmc.features import (
    CLOSE_TOKEN, FEATURE_NAMES, N_PARTICLE_FEATURES, N_SPECIAL, NO_MOTHER, OPEN_TOKEN, PAD, UNK, default_vocabulary, event_features,
    labels, pdg_to_index, tree_structure, visibility,
)


def _tree_events() -> SmcEvents:
    """Event 0: B0 -> (D- -> K+ pi- pi-) pi+ ; event 1: a lone photon (primary) and an unknown code."""
    pdg = np.array([511, -411, 211, 321, -211, -211, 22, 999999], np.int32)
    mother = np.array([-1, 0, 0, 1, 1, 1, -1, -1], np.int32)
    n = len(pdg)
    parts = {k: np.zeros(n, np.float32) for k in ("px", "py", "pz", "energy", "vx", "vy", "vz", "time")}
    parts["pz"][:] = np.arange(n, dtype=np.float32)
    parts["energy"][:] = np.arange(n, dtype=np.float32) + 1
    parts["vx"][3] = 0.01
    parts.update(pdg=pdg, mother=mother)
    per = {"event_id": np.array([10, 11]), "passed_fei_b0": np.array([True, False])}
    return SmcEvents(np.array([0, 6, 8]), parts, per)


def test_vocabulary_indices():
    vocab = default_vocabulary()
    assert np.all(np.diff(vocab) > 0) and 511 in vocab and -511 in vocab and 22 in vocab
    idx = pdg_to_index(np.array([[vocab[0], 999999], [vocab[-1], 22]]), vocab)
    assert idx[0, 0] == N_SPECIAL and idx[0, 1] == UNK and idx[1, 0] == N_SPECIAL + len(vocab) - 1
    assert idx[1, 1] == N_SPECIAL + np.searchsorted(vocab, 22)


def test_tree_structure():
    n_dau, depth = tree_structure(_tree_events())
    assert n_dau.tolist() == [2, 3, 0, 0, 0, 0, 0, 0]
    assert depth.tolist() == [0, 1, 1, 2, 2, 2, 0, 0]


def test_event_features_padding_and_content():
    ev = _tree_events()
    vocab = default_vocabulary()
    f = event_features(ev, max_particles=8, max_tokens=16)
    assert f["pdg"].shape == (2, 8) and f["x"].shape == (2, 8, N_PARTICLE_FEATURES) and f["tokens"].shape == (2, 16)
    assert f["mask"].sum(1).tolist() == [6, 2]
    assert (f["pdg"][~f["mask"]] == PAD).all() and (f["x"][~f["mask"]] == 0).all()
    assert f["mother"][0, :6].tolist() == [-1, 0, 0, 1, 1, 1]
    assert f["mother_pdg"][0, 0] == NO_MOTHER and f["mother_pdg"][0, 3] == pdg_to_index(np.array([-411]), vocab)[0]
    assert f["pdg"][1, 1] == UNK
    # features: E (column 3), final-state flag (last column), vertex asinh(0.01 cm / 0.01 cm)
    assert f["x"][0, :6, 3].tolist() == [1, 2, 3, 4, 5, 6]
    assert f["x"][0, :6, FEATURE_NAMES.index("final_state")].tolist() == [0, 0, 1, 1, 1, 1]
    assert f["x"][0, 3, 7] == pytest.approx(np.arcsinh(1.0), rel=1e-5)
    # decay string: 511 ( -411 ( 321 -211 -211 ) 211 )
    t = pdg_to_index(np.array([511, -411, 321, -211, 211]), vocab)
    expect = [t[0], OPEN_TOKEN, t[1], OPEN_TOKEN, t[2], t[3], t[3], CLOSE_TOKEN, t[4], CLOSE_TOKEN]
    assert f["tokens"][0, :10].tolist() == [int(v) for v in expect] and (f["tokens"][0, 10:] == PAD).all()
    assert f["n_particles"].tolist() == [6, 2]


def test_event_features_cut_and_errors():
    f = event_features(_tree_events(), max_particles=2, max_tokens=3)
    assert f["mask"].sum() == 4 and f["mother"][0].tolist() == [-1, 0] and f["tokens"].shape == (2, 3)
    with pytest.raises(ConfigError, match="max_particles"):
        event_features(_tree_events(), max_particles=0)


def test_features_ignore_emulator_outputs():
    ev = _tree_events()
    bare = SmcEvents(ev.offsets, ev.particles, {})
    a, b = event_features(ev), event_features(bare)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_labels():
    ev = _tree_events()
    assert labels(ev, ["fei_b0"]).tolist() == [[1.0], [0.0]]
    with pytest.raises(ConfigError, match="passed_fei_bplus"):
        labels(ev, ["fei_bplus"])


def test_visibility():
    """B+ -> (anti-D0 -> K+ pi- nu_e-like invisible) pi+ gamma: acceptance flags and invisible energy."""
    pdg = np.array([521, -421, 211, 321, -211, 12, 22, 211], np.int32)
    mother = np.array([-1, 0, 0, 1, 1, 1, 0, 0], np.int32)
    n = len(pdg)
    parts = {k: np.zeros(n, np.float32) for k in ("px", "py", "pz", "energy", "vx", "vy", "vz", "time")}
    parts["px"][:] = 0.5
    parts["pz"][:] = 0.5  # 45 deg, pT 0.5 GeV: inside acceptance
    parts["pz"][7] = 50.0  # the last pion flies down the beam pipe
    parts["energy"][:] = [5.3, 2.0, 0.6, 0.8, 0.4, 0.5, 0.7, 50.0]
    parts.update(pdg=pdg, mother=mother)
    vis, n_vis, inv = visibility(SmcEvents(np.array([0, n]), parts, {}))
    assert vis.tolist() == [0, 0, 1, 1, 1, 0, 1, 0]
    assert n_vis.tolist() == [4, 2, 1, 1, 1, 0, 1, 0]
    assert inv[1] == pytest.approx(0.5 / 2.0) and inv[5] == 1.0 and inv[2] == 0.0
    assert inv[0] == pytest.approx(1.0)  # (0.5 + 50) / 5.3, clipped to 1
