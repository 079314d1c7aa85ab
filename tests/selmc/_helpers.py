"""Shared helpers of the selective-MC tests."""

from __future__ import annotations

import numpy as np

from b2bkg.selmc.decays import load_decay_table


def vertex_sums(ev):
    """Per particle: summed daughter four-momenta (N, 4), summed daughter charge x3, number of daughters."""
    t = load_decay_table()
    P, off = ev.particles, ev.offsets
    n = ev.n_events
    evi = np.repeat(np.arange(n), np.diff(off))
    mom = P["mother"].astype(np.int64)
    has = mom >= 0
    gm = np.where(has, off[evi] + mom, 0)
    p4 = np.stack([P["px"], P["py"], P["pz"], P["energy"]], 1).astype(np.float64)
    s = np.zeros((len(mom), 4))
    np.add.at(s, gm[has], p4[has])
    pid = t.pdg_to_pid_array(P["pdg"])
    q3 = np.where(pid >= 0, t.charge3[np.maximum(pid, 0)], 0)
    sq = np.zeros(len(mom), np.int64)
    np.add.at(sq, gm[has], q3[has])
    ndau = np.bincount(gm[has], minlength=len(mom))
    return p4, q3, s, sq, ndau, gm, has
