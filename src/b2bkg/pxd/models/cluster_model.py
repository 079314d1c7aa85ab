"""Learned cluster model of ``pxd-fast``: shape (size, u/v extent, pattern) and pixel charges.

A cluster of a given detector group (layer x forward/backward sensor), v-region and size class is
drawn in four learned steps, all vectorized over every cluster of an event:

1. ``(size s, u-extent W, v-extent H)`` from a categorical over the (s, W, H) combinations seen in
   the training clusters of that (group, v-region, class) (integer triples, no pixel pattern), with
   weights recalibrated against merging (see :mod:`b2bkg.pxd.models.fast`);
2. the pixel pattern: a digital line of ``max(W, H)`` pixels joining opposite corners of the W x H
   box (the main diagonal, or the anti-diagonal with the learned probability of a negative u-v
   correlation), so the cluster spans exactly W x H and is 8-connected, plus ``s - max(W, H)``
   further box cells taken in order of their distance to the line (with a random jitter);
3. the total charge ``Q``: mean charge per pixel ``m = Q // s`` from a learned histogram per
   (group, size bucket), ``Q = floor((m + U) s)``;
4. the split of ``Q`` over the pixels: i.i.d. positive weights ``x_i`` from a learned quantile
   table (per group and size bucket), normalized: ``q_i = thr + floor(x_i / sum(x) * (Q - thr s) + U)``;
   the table is quantile-mapped (:func:`calibrate_weight_tables`) so that the normalized weights
   ``s x_i / sum(x)`` have the training marginal of ``s (q_i - thr) / (Q - thr s)``.

Every table is learned from the training clusters; no cluster (pattern with charges) is stored,
so sampled clusters are new combinations (see :func:`b2bkg.pxd.sample.replay_fraction`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["sensor_group", "N_GROUPS", "build_patterns", "split_charges", "calibrate_weight_tables"]

N_GROUPS = 4  # (layer 1, 2) x (sensor .1, .2)


def sensor_group(sensor: np.ndarray) -> np.ndarray:
    """Detector group of each sensor index: (layer - 1) * 2 + (sensor number - 1), from the
    numbering contract (indices 0..15 = layer 1, even index = sensor .1)."""
    s = np.asarray(sensor, np.int64)
    return (s >= 16).astype(np.int64) * 2 + (s % 2)


def build_patterns(size: np.ndarray, w: np.ndarray, h: np.ndarray, flip: np.ndarray, rng: np.random.Generator,
                   jitter: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel offsets of N clusters inside their boxes.

    Args:
        size, w, h: pixels, u extent, v extent of each cluster, shape (N,), int64 (``max(w, h) <=
            size <= w * h``).
        flip: True for the anti-diagonal orientation, shape (N,).
        rng: the event's generator (jitter of the extra cells).
        jitter: scale of the random jitter added to the cell-to-line distance (pixels).
    Returns:
        (cluster index (P,), du (P,), dv (P,)) of all P = sum(size) pixels, int64, grouped by cluster.
    """
    n = len(size)
    L = np.maximum(w, h)
    # --- the line: L pixels, t = 0..L-1 along the major axis
    ci = np.repeat(np.arange(n, dtype=np.int64), L)
    start = np.cumsum(L) - L
    t = np.arange(len(ci), dtype=np.int64) - start[ci]
    den = np.maximum(L - 1, 1).astype(np.float64)
    a = ((w - 1) / den)[ci]
    b = ((h - 1) / den)[ci]
    du = np.floor(t * a + 0.5).astype(np.int64)
    dv = np.floor(t * b + 0.5).astype(np.int64)
    fl = flip[ci]
    du = np.where(fl, (w - 1)[ci] - du, du)
    k = size - L
    ext = np.flatnonzero(k > 0)
    if len(ext) == 0:
        return ci, du, dv
    # --- extra cells: the off-line cells of a band of half-width r around the line (r = ceil(k/L),
    # at most the minor extent: even clipped by the box edge, >= k/L cells per line pixel), best (smallest jittered
    # distance to the line) first
    we, he, fe, ke, Lx = w[ext], h[ext], flip[ext], k[ext], L[ext]
    minor_ext = np.minimum(we, he)
    r = np.minimum(-(-ke // Lx), minor_ext)
    width = 2 * r + 1
    cells = Lx * width
    cj = np.repeat(np.arange(len(ext), dtype=np.int64), cells)
    cstart = np.cumsum(cells) - cells
    c = np.arange(len(cj), dtype=np.int64) - cstart[cj]
    wj = width[cj]
    tt = c // wj
    o = c - tt * wj - r[cj]
    W, H = we[cj], he[cj]
    dn = np.maximum(Lx[cj] - 1, 1).astype(np.float64)
    vmajor = H >= W
    slope = np.where(vmajor, W - 1, H - 1) / dn
    minor = np.floor(tt * slope + 0.5).astype(np.int64) + o
    keep = (o != 0) & (minor >= 0) & (minor < minor_ext[cj])
    cj, tt, minor, vmajor, W, H = cj[keep], tt[keep], minor[keep], vmajor[keep], W[keep], H[keep]
    cuf = np.where(vmajor, minor, tt)  # u in the unflipped frame
    cv = np.where(vmajor, tt, minor)
    norm = np.sqrt((W - 1.0) ** 2 + (H - 1.0) ** 2)
    dist = np.abs(cuf * (H - 1.0) - cv * (W - 1.0)) / np.maximum(norm, 1.0)
    score = np.minimum(dist + jitter * rng.random(len(cj)), 255.0)
    order = np.argsort(cj * 256.0 + score)  # by cluster, then score
    cj, cuf, cv = cj[order], cuf[order], cv[order]
    cu = np.where(fe[cj], we[cj] - 1 - cuf, cuf)
    first = np.searchsorted(cj, np.arange(len(ext)))
    rank = np.arange(len(cj)) - first[cj]
    take = rank < ke[cj]
    ci2 = ext[cj[take]]
    ci = np.concatenate([ci, ci2])
    du = np.concatenate([du, cu[take]])
    dv = np.concatenate([dv, cv[take]])
    o = np.argsort(ci, kind="stable")
    return ci[o], du[o], dv[o]


def split_charges(ci: np.ndarray, size: np.ndarray, total: np.ndarray, qtab: np.ndarray, qblock: np.ndarray,
                  u1: np.ndarray, u2: np.ndarray, thr: int) -> np.ndarray:
    """Pixel charges (ADU) of clusters with totals ``total``.

    Args:
        ci: cluster of each pixel, shape (P,), grouped (non-decreasing).
        size: pixels per cluster, shape (N,); total: cluster charge, ADU, shape (N,).
        qtab: quantile tables of the pixel weight, shape (n_blocks, Q) (levels 0..1 uniform).
        qblock: table of each cluster, shape (N,).
        u1, u2: uniforms, shape (P,) (weight draw, rounding).
        thr: threshold (ADU), the smallest charge of a pixel.
    Returns:
        int64 (P,) charges, each in thr..255 (before charge addition of overlapping clusters).
    """
    nq = qtab.shape[1] - 1
    pos = u1 * nq
    i0 = np.minimum(pos.astype(np.int64), nq - 1)
    fr = pos - i0
    flat = qblock[ci] * qtab.shape[1] + i0
    qf = qtab.reshape(-1)
    x = qf[flat] * (1 - fr) + qf[flat + 1] * fr
    x = np.maximum(x, 0.0)
    start = np.flatnonzero(np.r_[True, ci[1:] != ci[:-1]]) if len(ci) else np.zeros(0, np.int64)
    sx = np.add.reduceat(x, start) if len(ci) else np.zeros(0)
    sx_c = np.zeros(len(size))
    sx_c[ci[start]] = sx
    sx_p = sx_c[ci]
    sz = size[ci].astype(np.float64)
    share = np.where(sx_p > 0, x / np.where(sx_p > 0, sx_p, 1.0), 1.0 / sz)
    excess = (total - thr * size).astype(np.float64)[ci]
    q = thr + np.floor(share * np.maximum(excess, 0.0) + u2).astype(np.int64)
    return np.minimum(q, 255)



def calibrate_weight_tables(weight_q: np.ndarray, size_hist: np.ndarray, bucket_edges: np.ndarray, n_groups: int,
                            rng: np.random.Generator, iters: int = 6, n_pixels: int = 8_000,
                            damping: float = 0.8, n_sub: int = 1) -> np.ndarray:
    """Quantile-map the pixel-weight tables so that the *normalized* weights ``s x_i / sum(x)`` (what
    :func:`split_charges` uses) have the training marginal, not the raw draws.

    All blocks are iterated together: per block, ~``n_pixels`` pixels of clusters whose sizes follow
    the training size histogram inside the block's size bucket get fixed uniforms; each round maps
    them through the current table, normalizes per cluster, and multiplies every table level by
    (target quantile / output quantile) ** damping, keeping the table's mean (the split is scale
    invariant) and its monotonicity.

    Args:
        weight_q: quantile tables of the training weights ``s (q - thr) / (Q - thr s)``, shape
            (n_groups * n_buckets * n_sub, Q), block ``(group * n_buckets + bucket) * n_sub + j``
            (``j``: e.g. a charge bin); these quantiles are also the target.
        size_hist: training cluster-size histogram per group, shape (n_groups, S+1) (index = size,
            the last bin collects larger sizes).
        bucket_edges: first size of buckets 2.. (bucket 0 = size 1 is left alone).
        n_groups: detector groups.
        rng: generator of the Monte Carlo (fit time only).
    Returns:
        the calibrated tables, same shape.
    """
    target = weight_q.astype(np.float64)
    tab = target.copy()
    nblk, nq = tab.shape
    nb = len(bucket_edges) + 1
    sizes_all = np.arange(size_hist.shape[1])
    blk_sizes, blk_ids = [], []
    for b in range(nblk):
        g, k = divmod(b // n_sub, nb)
        if k == 0 or target[b, -1] <= 0:
            continue
        lo = bucket_edges[k - 1]
        hi = bucket_edges[k] if k < len(bucket_edges) else sizes_all[-1] + 1
        sel = (sizes_all >= lo) & (sizes_all < hi)
        w = size_hist[g, sel]
        if w.sum() <= 0:
            continue
        mean_size = (w * sizes_all[sel]).sum() / w.sum()
        blk_sizes.append(sizes_all[sel][rng.choice(sel.sum(), max(int(n_pixels / mean_size), 50), p=w / w.sum())])
        blk_ids.append(b)
    if not blk_ids:
        return tab.astype(np.float32)
    blk = np.asarray(blk_ids)
    sz = np.concatenate(blk_sizes)  # (C,) cluster sizes
    cblk = np.repeat(blk, [len(x) for x in blk_sizes])  # (C,) block of each cluster
    ci = np.repeat(np.arange(len(sz)), sz)  # (P,)
    start = np.cumsum(sz) - sz
    pb = cblk[ci]
    order0 = np.argsort(pb, kind="stable")  # pixels grouped by block (clusters are already)
    n_per = np.bincount(pb, minlength=nblk)
    first = np.cumsum(n_per) - n_per
    pos = rng.random(len(ci)) * (nq - 1)
    i0 = np.minimum(pos.astype(np.int64), nq - 2)
    fr = pos - i0
    lvl = np.linspace(0.0, 1.0, nq)
    for _ in range(iters):
        flat = tab.reshape(-1)
        x = flat[pb * nq + i0] * (1 - fr) + flat[pb * nq + i0 + 1] * fr
        sx = np.add.reduceat(x, start)
        out = np.where(sx[ci] > 0, sz[ci] * x / np.where(sx[ci] > 0, sx[ci], 1.0), 1.0)
        srt = out[order0][np.lexsort((out[order0], pb[order0]))]  # sorted inside each block
        # output quantiles of every active block at the table levels (nearest rank)
        idx = first[blk][:, None] + np.rint(lvl[None] * (n_per[blk][:, None] - 1)).astype(np.int64)
        gq = srt[idx]  # (n_active, nq)
        t = target[blk]
        ratio = np.where((gq > 1e-9) & (t > 0), t / np.maximum(gq, 1e-9), 1.0)
        ratio[:, -1] = ratio[:, -2]  # the maximum is all noise
        t_new = np.maximum.accumulate(tab[blk] * np.clip(ratio, 0.5, 2.0) ** damping, axis=1)
        tab[blk] = t_new * (t.mean(1) / np.maximum(t_new.mean(1), 1e-12))[:, None]
    return tab.astype(np.float32)
