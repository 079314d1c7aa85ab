"""Sparse PXD sampling helpers: blocked categorical draws, digit assembly, exact-replay check.

Used by the sparse generators (:mod:`b2bkg.pxd.models.fast`, :mod:`b2bkg.pxd.models.null`); none
of them ever builds a dense 250 x 768 image.

* :class:`BlockedAlias` holds many categorical distributions ("blocks", each over its own support)
  in flat arrays and draws from any mix of them in O(1) per draw (Walker/Vose alias method).
* :func:`assemble_digits` turns pixel deposits into zero-suppressed digits of one event: charges
  landing on the same pixel add, the 8-bit ceiling clips, the threshold suppresses.
* :func:`cluster_signatures` / :func:`replay_fraction` measure whether a generator replays
  training clusters (exact pixel pattern *and* charges).

Example:
    >>> import numpy as np
    >>> a = BlockedAlias.from_weights([np.array([1.0, 0, 3]), np.array([2.0])])
    >>> j = a.draw(np.array([0, 0, 1]), np.random.default_rng(1).random((2, 3)))
    >>> sorted(set(j[:2].tolist())) <= [0, 2], int(j[2])
    (True, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from b2bkg.io.events import N_UCELLS, N_VCELLS, PxdDigits

__all__ = ["BlockedAlias", "alias_tables", "assemble_digits", "cluster_signatures", "replay_fraction"]


def alias_tables(p: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose alias tables of every block ``p[offsets[b]:offsets[b+1]]`` (block-normalized inside).

    Args:
        p: non-negative weights, shape (M,), concatenated blocks.
        offsets: block boundaries, shape (n_blocks+1,), int64.
    Returns:
        (prob float32 (M,), alias int64 (M,)): a draw in block b picks ``j = offsets[b] +
        floor(U1 * n_b)`` and keeps ``j`` if ``U2 < prob[j]`` else takes ``alias[j]`` (global index).
        An all-zero block becomes uniform.
    """
    p = np.asarray(p, np.float64)
    prob = np.ones(len(p), np.float64)
    alias = np.arange(len(p), dtype=np.int64)
    for b in range(len(offsets) - 1):  # one pass per block (fit time only)
        lo, hi = int(offsets[b]), int(offsets[b + 1])
        n = hi - lo
        if n == 0:
            continue
        w = p[lo:hi]
        tot = w.sum()
        q = w * (n / tot) if tot > 0 else np.ones(n)
        small = list(np.flatnonzero(q < 1.0))
        large = list(np.flatnonzero(q >= 1.0))
        while small and large:
            s, g = small.pop(), large[-1]
            prob[lo + s] = q[s]
            alias[lo + s] = lo + g
            q[g] -= 1.0 - q[s]
            if q[g] < 1.0:
                large.pop()
                small.append(g)
        for i in small + large:
            prob[lo + i] = 1.0
    return prob.astype(np.float32), alias


@dataclass
class BlockedAlias:
    """Many categorical distributions in flat arrays (see :func:`alias_tables`).

    Attributes:
        offsets: block boundaries, shape (n_blocks+1,), int64.
        prob: acceptance probability of each entry, shape (M,), float32.
        alias: fallback entry (global index), shape (M,), int64.
    """

    offsets: np.ndarray
    prob: np.ndarray
    alias: np.ndarray

    @classmethod
    def from_weights(cls, blocks) -> "BlockedAlias":
        """From a list of 1-D weight arrays (one per block)."""
        sizes = np.array([len(b) for b in blocks], np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        p = np.concatenate([np.asarray(b, np.float64) for b in blocks]) if len(blocks) else np.zeros(0)
        prob, alias = alias_tables(p, offsets)
        return cls(offsets, prob, alias)

    @classmethod
    def from_flat(cls, p: np.ndarray, offsets: np.ndarray) -> "BlockedAlias":
        prob, alias = alias_tables(p, offsets)
        return cls(np.asarray(offsets, np.int64), prob, alias)

    def draw(self, block: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Global entry index of one draw per element of ``block`` (int array, shape (n,));
        ``u``: uniforms, shape (2, n). Returns int64 (n,)."""
        lo = self.offsets[block]
        n = self.offsets[block + 1] - lo
        j = lo + np.minimum((u[0] * n).astype(np.int64), n - 1)
        return np.where(u[1] < self.prob[j], j, self.alias[j])


def assemble_digits(sensor: np.ndarray, ucell: np.ndarray, vcell: np.ndarray, charge: np.ndarray,
                    threshold_adu: int, max_adu: int = 255) -> dict[str, np.ndarray]:
    """Pixel deposits of one event -> zero-suppressed digits.

    Args:
        sensor, ucell, vcell: pixel of each deposit, shape (n,), any int dtype; deposits off the
            sensor (u outside 0..249, v outside 0..767) are dropped.
        charge: deposit charge, ADU, shape (n,), int in 0..255.
        threshold_adu: digits below this summed charge are suppressed.
        max_adu: the 8-bit ceiling applied after summing.
    Returns:
        ``sensor`` uint8, ``ucell`` uint16, ``vcell`` uint16, ``charge`` uint8 of the fired pixels,
        unique and sorted by (sensor, vcell, ucell).
    """
    ok = (ucell >= 0) & (ucell < N_UCELLS) & (vcell >= 0) & (vcell < N_VCELLS)
    key = (sensor[ok].astype(np.int32) * N_VCELLS + vcell[ok].astype(np.int32)) * N_UCELLS + ucell[ok].astype(np.int32)
    # key < 40*768*250 < 2**23: key and an 8-bit charge packed in one int32, one sort
    packed = np.sort((key << 8) | np.minimum(charge[ok], 255).astype(np.int32))
    k = packed >> 8
    q = packed & 255
    if len(k):
        new = np.empty(len(k), bool)
        new[0] = True
        np.not_equal(k[1:], k[:-1], out=new[1:])
        start = np.flatnonzero(new)
        if len(start) < len(k):  # some pixels hit twice: charges add
            q = np.add.reduceat(q, start)
            k = k[start]
    fired = q >= threshold_adu
    k, q = k[fired], np.minimum(q[fired], max_adu)
    u = k % N_UCELLS
    r = k // N_UCELLS
    return {"sensor": (r // N_VCELLS).astype(np.uint8), "ucell": u.astype(np.uint16),
            "vcell": (r % N_VCELLS).astype(np.uint16), "charge": q.astype(np.uint8)}


_P1, _P2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)


def cluster_signatures(digits: PxdDigits, min_size: int = 3) -> np.ndarray:
    """Translation-invariant signature (pixel pattern and charges) of every cluster of size >= ``min_size``.

    Two clusters have the same signature iff (up to a 2**-64 hash collision) they have the same
    pixels relative to their bounding box corner and the same charge on each of them.

    Returns:
        uint64 array, shape (n_clusters_selected,).
    """
    from .clusters import find_clusters

    cl = find_clusters(digits)
    lab = cl.hit_cluster
    keep = cl.size[lab] >= min_size
    if not keep.any():
        return np.zeros(0, np.uint64)
    lab = lab[keep]
    u = digits.ucell[keep].astype(np.int64)
    v = digits.vcell[keep].astype(np.int64)
    q = digits.charge[keep].astype(np.int64)
    umin = np.full(cl.n_clusters, 1 << 30, np.int64)
    vmin = np.full(cl.n_clusters, 1 << 30, np.int64)
    np.minimum.at(umin, lab, u)
    np.minimum.at(vmin, lab, v)
    token = (((u - umin[lab]) << 11 | (v - vmin[lab])) << 8 | q).astype(np.uint64) + np.uint64(1)
    # order-independent: sum and xor-sum of two multiplicative hashes of every pixel token
    with np.errstate(over="ignore"):
        h1 = token * _P1
        h1 ^= h1 >> np.uint64(29)
        h2 = (token + np.uint64(12345)) * _P2
        h2 ^= h2 >> np.uint64(31)
    n = cl.n_clusters
    s1 = np.zeros(n, np.uint64)
    np.add.at(s1, lab, h1)
    s2 = np.zeros(n, np.uint64)
    np.bitwise_xor.at(s2, lab, h2)
    sel = np.unique(lab)
    with np.errstate(over="ignore"):
        return s1[sel] * np.uint64(31) ^ s2[sel] ^ (cl.size[sel].astype(np.uint64) << np.uint64(56))


def replay_fraction(train: PxdDigits, sample: PxdDigits, min_size: int = 3) -> dict[str, float]:
    """Fraction of the clusters (size >= ``min_size``) of ``sample`` that reproduce a cluster of
    ``train`` exactly (pixel pattern relative to the bounding box, and every charge).

    Read it next to the same number for an independent truth sample: a generator that replays
    training clusters sits above that floor, one that generates sits at or below it.

    Returns:
        ``{"fraction": f, "n_clusters": n, "n_matched": m}``.
    """
    ref = np.unique(cluster_signatures(train, min_size))
    sig = cluster_signatures(sample, min_size)
    m = int(np.isin(sig, ref).sum()) if len(sig) else 0
    return {"fraction": m / len(sig) if len(sig) else float("nan"), "n_clusters": float(len(sig)), "n_matched": float(m)}

