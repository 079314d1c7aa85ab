"""8-connected clustering on inputs with exact answers, and against dense scipy.ndimage labelling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from b2bkg.io.events import PxdDigits
from b2bkg.pxd.clusters import find_clusters


def _digits(events: list[list[tuple[int, int, int, int]]]) -> PxdDigits:
    """events: list of lists of (sensor, u, v, charge)."""
    return PxdDigits.from_events([
        {k: np.array([h[i] for h in ev], dtype=int) for i, k in enumerate(("sensor", "ucell", "vcell", "charge"))}
        for ev in events
    ])


def test_known_cluster_set():
    ev0 = [
        (3, 10, 10, 20), (3, 11, 11, 30), (3, 12, 12, 10),  # diagonal chain: one cluster
        (3, 10, 20, 8), (3, 10, 22, 9),                      # gap of one pixel: two clusters
        (3, 50, 100, 40), (3, 50, 101, 5), (3, 51, 100, 7), (3, 51, 101, 9),  # 2x2 block
        (4, 10, 10, 11),                                      # same (u, v) on another sensor
    ]
    ev1 = [(3, 10, 10, 12), (3, 11, 9, 13)]                  # anti-diagonal pair, pixel shared with event 0
    d = _digits([ev0, [], ev1])
    c = find_clusters(d)
    assert c.n_clusters == 6
    assert c.offsets.tolist() == [0, 5, 5, 6]
    assert c.event.tolist() == [0, 0, 0, 0, 0, 2]
    assert c.sensor.tolist() == [3, 3, 3, 3, 4, 3]
    # ordered by (event, sensor, smallest (u, v))
    assert c.size.tolist() == [3, 1, 1, 4, 1, 2]
    assert c.u_extent.tolist() == [3, 1, 1, 2, 1, 2]
    assert c.v_extent.tolist() == [3, 1, 1, 2, 1, 2]
    assert c.total_charge.tolist() == [60, 8, 9, 61, 11, 25]
    assert c.seed_charge.tolist() == [30, 8, 9, 40, 11, 13]
    np.testing.assert_allclose(c.u_cog[0], (10 * 20 + 11 * 30 + 12 * 10) / 60)
    np.testing.assert_allclose(c.v_cog[3], (100 * 47 + 101 * 14) / 61)
    np.testing.assert_allclose(c.v_cog[5], (10 * 12 + 9 * 13) / 25)
    assert c.hit_cluster.tolist() == [0, 0, 0, 1, 2, 3, 3, 3, 3, 4, 5, 5]
    assert c.per_event_counts().tolist() == [5, 0, 1]


def test_anti_diagonal_and_events_never_merge():
    d = _digits([[(3, 10, 10, 12), (3, 11, 9, 13)], [(3, 10, 10, 12)]])
    c = find_clusters(d)
    assert c.size.tolist() == [2, 1]
    assert c.event.tolist() == [0, 1]
    assert c.hit_cluster.tolist() == [0, 0, 1]


def test_sensor_and_edge_boundaries():
    # u = 249 of sensor 0 and u = 0 of sensor 1 must not join; nor v = 767 / v = 0 of the next row
    d = _digits([[
        (0, 249, 767, 10), (1, 0, 0, 10),        # linear neighbours across a sensor boundary
        (0, 5, 767, 10), (0, 6, 0, 10),          # v edge of one row next to v start of the next row
        (0, 249, 0, 10), (0, 248, 1, 10),        # corner pixel with a diagonal neighbour
        (39, 249, 767, 200), (39, 248, 766, 7),  # last pixel of the detector
    ]])
    c = find_clusters(d)
    assert sorted(c.size.tolist()) == [1, 1, 1, 1, 2, 2]
    assert c.n_clusters == 6
    assert c.total_charge[c.sensor == 39].tolist() == [207]
    assert c.seed_charge[c.sensor == 39].tolist() == [200]


def test_empty_and_hit_order_independence(rng):
    c = find_clusters(PxdDigits.empty(3))
    assert c.n_clusters == 0 and c.offsets.tolist() == [0, 0, 0, 0] and len(c.hit_cluster) == 0
    # shuffling hits inside an event changes nothing but hit_cluster's order
    d = _digits([[(1, 3, 3, 9), (1, 4, 4, 8), (2, 0, 0, 7), (1, 100, 3, 10)]])
    perm = np.array([3, 1, 2, 0])
    d2 = PxdDigits(d.offsets, d.sensor[perm], d.ucell[perm], d.vcell[perm], d.charge[perm])
    c1, c2 = find_clusters(d), find_clusters(d2)
    for k in ("size", "total_charge", "sensor", "u_cog", "v_cog"):
        np.testing.assert_array_equal(getattr(c1, k), getattr(c2, k))
    np.testing.assert_array_equal(c1.hit_cluster[perm], c2.hit_cluster)


def _dense_blob_digits(rng, n_events=3, sensors=(0, 7, 39), p=0.08):
    events = []
    for _ in range(n_events):
        parts = []
        for s in sensors:
            img = rng.random((250, 768)) < p
            u, v = np.nonzero(img)
            parts.append((np.full(len(u), s), u, v, rng.integers(7, 256, len(u))))
        events.append({k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(("sensor", "ucell", "vcell", "charge"))})
    # shuffle hit order inside each event
    for e in events:
        perm = rng.permutation(len(e["sensor"]))
        for k in e:
            e[k] = e[k][perm]
    return PxdDigits.from_events(events)


@pytest.mark.parametrize("chunk_hits", [1, 20_000, 10_000_000])
def test_matches_dense_labelling(rng, chunk_hits):
    d = _dense_blob_digits(rng)
    c = find_clusters(d, chunk_hits=chunk_hits)
    assert len(c.hit_cluster) == d.n_hits
    assert c.size.sum() == d.n_hits
    for e in range(d.n_events):
        ev = d.event(e)
        for s in np.unique(ev["sensor"]):
            m = ev["sensor"] == s
            img = np.zeros((250, 768), np.int64)
            img[ev["ucell"][m], ev["vcell"][m]] = ev["charge"][m]
            lab, n = ndimage.label(img > 0, structure=np.ones((3, 3)))
            sel = (c.event == e) & (c.sensor == s)
            assert sel.sum() == n
            np.testing.assert_array_equal(np.sort(c.size[sel]), np.sort(np.bincount(lab.ravel())[1:]))
            np.testing.assert_array_equal(
                np.sort(c.total_charge[sel]), np.sort(ndimage.sum(img, lab, np.arange(1, n + 1)).astype(int)))
            np.testing.assert_array_equal(
                np.sort(c.seed_charge[sel]), np.sort(ndimage.maximum(img, lab, np.arange(1, n + 1)).astype(int)))
            # the hit -> cluster map is the same partition as the dense labels
            hl = lab[ev["ucell"][m], ev["vcell"][m]]
            hc = c.hit_cluster[d.offsets[e]:d.offsets[e + 1]][m]
            pairs = np.unique(np.c_[hl, hc], axis=0)
            assert len(pairs) == len(np.unique(hl)) == len(np.unique(hc))
            assert np.all(c.sensor[hc] == s) and np.all(c.event[hc] == e)


def test_chunking_does_not_change_result(rng):
    d = _dense_blob_digits(rng, n_events=4, sensors=(2, 3), p=0.03)
    a, b = find_clusters(d, chunk_hits=1), find_clusters(d)
    for k in ("offsets", "event", "sensor", "size", "u_extent", "v_extent", "total_charge", "seed_charge",
              "u_cog", "v_cog", "hit_cluster"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
