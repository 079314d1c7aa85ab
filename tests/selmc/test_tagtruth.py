"""Generator-level tag reconstructibility (b2bkg.selmc.tagtruth) on hand-built decay trees."""

from __future__ import annotations

import numpy as np

from b2bkg.io.events import SmcEvents
from b2bkg.selmc.features import N_PARTICLE_FEATURES, TAG_FEATURE_NAMES, event_features, n_particle_features
from b2bkg.selmc.tagtruth import tag_reconstructibility

# (pdg, mother within the event, direction): "c" central (theta 90 deg, pT 1 GeV), "f" forward (theta ~ 0)
EVENTS = [
    # 0: B0 -> (D- -> K+ pi- pi-) pi+, all central: a reconstructible "D- pi" tag
    [(511, -1, "c"), (-411, 0, "c"), (211, 0, "c"), (321, 1, "c"), (-211, 1, "c"), (-211, 1, "c")],
    # 1: the same with one D pion along the beam: matched channel, not reconstructible
    [(511, -1, "c"), (-411, 0, "c"), (211, 0, "c"), (321, 1, "c"), (-211, 1, "c"), (-211, 1, "f")],
    # 2: semileptonic B0 -> D- e+ nu: no tag channel (the D itself is fine)
    [(511, -1, "c"), (-411, 0, "c"), (-11, 0, "c"), (12, 0, "c"), (321, 1, "c"), (-211, 1, "c"), (-211, 1, "c")],
    # 3: B0 -> D*- pi+, D*- -> D0bar pi-, D0bar -> K*+ pi- (K*+ -> K+ pi0, pi0 -> gamma gamma): through a resonance
    [(511, -1, "c"), (-413, 0, "c"), (211, 0, "c"), (-421, 1, "c"), (-211, 1, "c"), (323, 3, "c"), (-211, 3, "c"),
     (321, 5, "c"), (111, 5, "c"), (22, 8, "c"), (22, 8, "c")],
    # 4: B+ -> (D0bar -> K+ pi-) pi+ and a charged B in the same event as nothing else
    [(521, -1, "c"), (-421, 0, "c"), (211, 0, "c"), (321, 1, "c"), (-211, 1, "c")],
]


def _events() -> SmcEvents:
    rows = [r for ev in EVENTS for r in ev]
    n = len(rows)
    pdg = np.array([r[0] for r in rows], np.int32)
    mother = np.array([r[1] for r in rows], np.int32)
    fwd = np.array([r[2] == "f" for r in rows])
    parts = {k: np.zeros(n, np.float32) for k in ("px", "py", "pz", "energy", "vx", "vy", "vz", "time")}
    parts["px"][:] = np.where(fwd, 0.01, 1.0)
    parts["pz"][:] = np.where(fwd, 2.0, 0.0)
    parts["energy"][:] = 3.0
    parts.update(pdg=pdg, mother=mother)
    off = np.cumsum([0] + [len(ev) for ev in EVENTS])
    return SmcEvents(off, parts, {"event_id": np.arange(len(EVENTS))})


def test_tag_channels_on_true_trees():
    ev = _events()
    pp, pe = tag_reconstructibility(ev)
    b = ev.offsets[:-1]  # the B is the first particle of every event
    assert pp["reco_match"][b].tolist() == [1, 1, 0, 1, 1]
    assert pp["reco_ok"][b].tolist() == [1, 0, 0, 1, 1]
    assert pp["tag_prior"][b].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0]  # "D- pi", "D*- pi", "D0 pi" priors
    d_semilep = ev.offsets[2] + 1
    assert pp["reco_ok"][d_semilep] == 1  # D- -> K pi pi is fine, only the B channel fails
    # expected detection probability: product of the five central tracks' efficiencies
    trk = np.arange(ev.offsets[0] + 2, ev.offsets[1])
    assert np.isclose(pp["reco_eff"][b[0]], np.prod(pp["reco_eff"][trk[trk != ev.offsets[0] + 2]]) * pp["reco_eff"][ev.offsets[0] + 2])
    assert 0.5 < pp["reco_eff"][b[0]] < 0.95
    assert pe["tag_b0"].tolist()[1:3] == [0.0, 0.0] and pe["tag_b0"][0] > 0 and pe["tag_b0"][3] > 0
    assert pe["tag_b0"][4] == 0 and pe["tag_bplus"][4] > 0 and (pe["tag_bplus"][:4] == 0).all()
    assert pe["n_reco_charm"].tolist() == [1, 0, 1, 2, 1]  # D*- and D0bar both count in event 3


def test_tag_features_columns():
    ev = _events()
    plain = event_features(ev, max_particles=16, max_tokens=64)
    tagged = event_features(ev, max_particles=16, max_tokens=64, tag_features=True)
    assert plain["x"].shape[-1] == N_PARTICLE_FEATURES == n_particle_features(False)
    assert tagged["x"].shape[-1] == N_PARTICLE_FEATURES + len(TAG_FEATURE_NAMES) == n_particle_features(True)
    np.testing.assert_array_equal(tagged["x"][..., :N_PARTICLE_FEATURES], plain["x"])
    col = N_PARTICLE_FEATURES + TAG_FEATURE_NAMES.index("ev_tag_b0")
    m = tagged["mask"]
    for i in range(len(EVENTS)):  # per-event column repeated on every real particle
        v = tagged["x"][i, m[i], col]
        assert np.all(v == v[0])
    assert tagged["x"][0, 0, col] > 0 and tagged["x"][1, 0, col] == 0
