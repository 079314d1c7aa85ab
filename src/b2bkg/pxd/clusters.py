"""8-connected PXD clusters as a sparse connected-components pass over the fired pixels.

No dense images are ever built. Each hit gets a linear key on a padded grid

    key = ((image * (250 + 2) + (u + 1)) * (768 + 2) + (v + 1)),   image = event * 40 + sensor

so that the 8 neighbours of a pixel are ``key + du * 770 + dv`` and a neighbour that would fall off
the sensor edge lands in the (never fired) padding instead of on another sensor or event. The keys
are sorted once; of the four "forward" neighbour offsets, (0,+1) is the next key in sorted order and
(+1,-1), (+1,0), (+1,+1) are three consecutive keys found with one ``np.searchsorted``; the found pairs are the edges of a sparse graph whose connected components
(``scipy.sparse.csgraph.connected_components``) are the clusters. Work is done in chunks of whole
events so memory stays bounded; cluster order is (event, sensor, smallest (u, v) of the cluster).

Example:
    >>> from b2bkg.io.events import PxdDigits
    >>> d = PxdDigits([0, 3], sensor=[0, 0, 0], ucell=[5, 6, 9], vcell=[5, 6, 9], charge=[10, 20, 7])
    >>> c = find_clusters(d)
    >>> c.size.tolist(), c.total_charge.tolist(), c.hit_cluster.tolist()
    ([2, 1], [30, 7], [0, 0, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits

__all__ = ["Clusters", "find_clusters", "CLUSTER_FEATURES"]

_UP = N_UCELLS + 2  # padded u range
_VP = N_VCELLS + 2  # padded v range
# keys of one chunk must fit in uint32, with room for the +771 neighbour offset
_MAX_CHUNK_EVENTS = (2**32 - 2 * _VP * _UP) // (N_SENSORS * _UP * _VP)

#: per-cluster features compared between samples (name -> attribute of Clusters)
CLUSTER_FEATURES = ("size", "u_extent", "v_extent", "total_charge", "seed_charge")


@dataclass
class Clusters:
    """8-connected clusters of a set of events, ordered by (event, sensor, first pixel).

    Attributes (``n`` clusters, ``n_hits`` hits of the clustered digits):
        offsets: cluster range of each event, shape (n_events+1,), int64.
        event: event index of each cluster, shape (n,), int64.
        sensor: sensor index 0..39, shape (n,), uint8.
        size: number of pixels, shape (n,), int32.
        u_extent: max u - min u + 1 (pixels), shape (n,), int32.
        v_extent: max v - min v + 1 (pixels), shape (n,), int32.
        total_charge: sum of pixel charges, ADU, shape (n,), int32.
        seed_charge: largest pixel charge, ADU, shape (n,), int32.
        u_cog: charge-weighted centre of gravity in u (pixel units), shape (n,), float64.
        v_cog: charge-weighted centre of gravity in v (pixel units), shape (n,), float64.
        hit_cluster: cluster index of every hit, in the hit order of the input, shape (n_hits,), int64.
    """

    offsets: np.ndarray
    event: np.ndarray
    sensor: np.ndarray
    size: np.ndarray
    u_extent: np.ndarray
    v_extent: np.ndarray
    total_charge: np.ndarray
    seed_charge: np.ndarray
    u_cog: np.ndarray
    v_cog: np.ndarray
    hit_cluster: np.ndarray

    @property
    def n_clusters(self) -> int:
        return len(self.size)

    @property
    def n_events(self) -> int:
        return len(self.offsets) - 1

    def per_event_counts(self) -> np.ndarray:
        """Number of clusters in each event, shape (n_events,), int64."""
        return np.diff(self.offsets)


_PER_CLUSTER = ("event", "sensor", "size", "u_extent", "v_extent", "total_charge", "seed_charge", "u_cog", "v_cog")


def _cluster_chunk(event: np.ndarray, sensor: np.ndarray, ucell: np.ndarray, vcell: np.ndarray,
                   charge: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Cluster the hits of a run of whole events (``event`` counted from the chunk's first event).

    Returns per-cluster arrays (dict over _PER_CLUSTER, event still chunk-local) and the cluster
    label of each hit in input order, shape (n_hits,), int64.
    """
    n = len(event)
    image = event * N_SENSORS + sensor.astype(np.int64)
    key = (image * _UP + (ucell.astype(np.int64) + 1)) * _VP + (vcell.astype(np.int64) + 1)
    key = key.astype(np.uint32)  # the chunk's key range fits (see _MAX_CHUNK_EVENTS): faster sort/search
    order = np.argsort(key)
    skey = key[order]
    # (0, +1) neighbours and duplicated pixels (which zero-suppressed digits should not have; they
    # are joined) are adjacent in sorted order
    d = np.diff(skey)
    r0 = np.flatnonzero(d <= 1)
    rows, cols = [r0], [r0 + 1]
    # (+1, -1), (+1, 0), (+1, +1): three consecutive keys starting at key + 769; one search finds the
    # first candidate, the next two positions hold the others if they are fired
    j0 = np.searchsorted(skey, skey + np.uint32(_VP - 1))
    for k in range(3):
        j = np.minimum(j0 + k, n - 1)
        dk = skey[j] - skey  # >= 0 since j > i or j == n-1
        hit = (dk >= _VP - 1) & (dk <= _VP + 1)
        rows.append(np.flatnonzero(hit))
        cols.append(j[hit])
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n)).tocsr()
    n_cl, slabel = connected_components(graph, directed=False)
    slabel = slabel.astype(np.int64)
    # order clusters by their first (smallest-key) pixel. scipy already numbers components in order
    # of their smallest node; check that cheaply and relabel only if it ever does not.
    if n and not (slabel[0] == 0 and np.all(np.diff(np.maximum.accumulate(slabel)) <= 1)):
        _, first = np.unique(slabel, return_index=True)
        rank = np.empty(n_cl, np.int64)
        rank[np.argsort(first)] = np.arange(n_cl, dtype=np.int64)
        slabel = rank[slabel]

    # group hits by cluster: labels are nearly sorted already, a stable sort is cheap
    g = np.argsort(slabel, kind="stable")
    hidx = order[g]  # input hit index of each grouped hit
    lab = slabel[g]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    u = ucell[hidx].astype(np.int32)
    v = vcell[hidx].astype(np.int32)
    q = charge[hidx].astype(np.int32)
    size = np.diff(np.r_[starts, n]).astype(np.int32)
    qtot = np.add.reduceat(q, starts)
    qtot_f = qtot.astype(np.float64)
    out = {
        "event": event[hidx[starts]].astype(np.int64),
        "sensor": sensor[hidx[starts]].astype(np.uint8),
        "size": size,
        "u_extent": (np.maximum.reduceat(u, starts) - np.minimum.reduceat(u, starts) + 1).astype(np.int32),
        "v_extent": (np.maximum.reduceat(v, starts) - np.minimum.reduceat(v, starts) + 1).astype(np.int32),
        "total_charge": qtot.astype(np.int32),
        "seed_charge": np.maximum.reduceat(q, starts).astype(np.int32),
        "u_cog": np.add.reduceat(u.astype(np.float64) * q, starts) / qtot_f,
        "v_cog": np.add.reduceat(v.astype(np.float64) * q, starts) / qtot_f,
    }
    hit_label = np.empty(n, np.int64)
    hit_label[order] = slabel
    return out, hit_label


def find_clusters(digits: PxdDigits, *, chunk_hits: int = 4_000_000) -> Clusters:
    """8-connected clusters per (event, sensor) of zero-suppressed PXD digits.

    Args:
        digits: the hits of ``n_events`` events (any hit order inside an event).
        chunk_hits: events are processed in runs of about this many hits (memory bound only; the
            result does not depend on it).

    Returns:
        :class:`Clusters` ordered by (event, sensor, smallest (u, v) pixel of the cluster).
    """
    n_ev = digits.n_events
    offsets = digits.offsets
    n_hits = digits.n_hits
    parts: list[dict[str, np.ndarray]] = []
    hit_cluster = np.empty(n_hits, np.int64)
    base_cluster = 0
    start = 0
    while start < n_ev:
        # largest stop with offsets[stop] - offsets[start] <= chunk_hits (at least one event)
        stop = int(np.searchsorted(offsets, offsets[start] + chunk_hits, side="right")) - 1
        stop = min(max(stop, start + 1), n_ev, start + _MAX_CHUNK_EVENTS)
        a, b = int(offsets[start]), int(offsets[stop])
        if b > a:
            ev = np.repeat(np.arange(stop - start, dtype=np.int64), np.diff(offsets[start : stop + 1]))
            out, lab = _cluster_chunk(ev, digits.sensor[a:b], digits.ucell[a:b], digits.vcell[a:b], digits.charge[a:b])
            out["event"] += start
            hit_cluster[a:b] = lab + base_cluster
            base_cluster += len(out["size"])
            parts.append(out)
        start = stop
    if parts:
        cols = {k: np.concatenate([p[k] for p in parts]) for k in _PER_CLUSTER}
    else:
        dts = (np.int64, np.uint8, np.int32, np.int32, np.int32, np.int32, np.int32, np.float64, np.float64)
        cols = {k: np.zeros(0, dt) for k, dt in zip(_PER_CLUSTER, dts)}
    coff = np.searchsorted(cols["event"], np.arange(n_ev + 1, dtype=np.int64)).astype(np.int64)
    return Clusters(offsets=coff, hit_cluster=hit_cluster, **cols)
