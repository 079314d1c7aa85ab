"""``pxd-fast``: the production PXD background generator, sparse from end to end.

Per event (never a dense image; every stage learned from a data file in the contract schema):

(a) beam conditions: the file's (``generate --conditions``) or drawn from the learned density;
    the 40 x K per-(sensor, size class) cluster counts from a Poisson-lognormal whose mean is a
    reduced-rank regression on a degree-2 polynomial of the conditions (``count_rank``; or, with
    ``count_rank: 0``, a Poisson regression on the log-conditions and their squares) and whose latent
    low-rank + diagonal covariance carries the remaining sensor-to-sensor correlation (:mod:`.fast_density`);
(b) cluster positions: per (sensor, class) histogram of the cluster centre on a coarse (u, v) grid
    (``u_bin_pixels`` x ``v_bin_pixels``), drawn with the alias method, uniform inside a bin;
(c) cluster shape and charges from the learned cluster model (:mod:`.cluster_model`), conditioned
    on (layer x forward/backward group, v-region, size class);
(d) assembly: pixel deposits -> digits, charges on the same pixel add, 8-bit clip, the learned
    threshold; learned dead drain lines / gate rows are dropped and learned hot pixels fire.

Training (:meth:`FastPxd.fit`, one pass, no optimizer) streams the file in chunks: clusters are
found with :func:`b2bkg.pxd.clusters.find_clusters`, histograms and counts accumulated, the densities
fitted; then ``calib_iters`` rounds generate ``calib_events`` events at the training conditions and
correct the size-table weights and count intercepts for what clusters placed at random merge into
(training clusters are already merged once): an unfolding learned from the data, not a constant;
last, one event is generated per training row (its conditions) and the per-sensor occupancy is
corrected by a factor that depends on the conditions (the pixels per cluster and the merging follow
the source mix): the ratio of the reduced-rank polynomial regressions of the truth and of the
generated occupancy per sensor (with ``count_rank: 0``: a log-linear regression of the ratio per
detector group, then a constant factor per sensor).

Example:
    $ b2bkg train pxd-fast --data train.h5 --out runs/fast --config small
    $ b2bkg generate --model runs/fast --events 1000 --seed 2 --out fast.h5 [--conditions other.h5]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError, SchemaError
from b2bkg.core.progress import progress
from b2bkg.core.seeding import event_rng, stream_rng
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits
from b2bkg.pxd.sample import BlockedAlias, assemble_digits
from b2bkg.training.registry import Family, TrainConfig, register

from . import fast_density as fd
from .cluster_model import N_GROUPS, build_patterns, calibrate_weight_tables, sensor_group, split_charges

__all__ = ["FastConfig", "FastPxdModel", "FastPxd", "sample_fast_event", "load_pxd_training", "cluster_stage"]

SAMPLE_DOMAIN = "pxd-fast.generate"
COND_DOMAIN = "pxd-fast.conditions"
_SMAX = 64  # size histogram of the calibration: sizes >= 64 share the last bin
_XMAX, _XBINS = 24.0, 4800  # pixel-weight histogram range and bins (fit time only)


@dataclass(frozen=True)
class FastConfig(TrainConfig):
    """``pxd-fast`` (fit-only: ``max_steps`` etc. are unused).

    Attributes:
        class_edges: first size of size classes 2..K (class 1 = sizes below the first edge).
        size_buckets: first size of every charge bucket after the first (bucket 1 = size 1).
        charge_edges: mean-charge-per-pixel bins (ADU) the charge-split tables are split by.
        u_bin_pixels, v_bin_pixels: position histogram bins (must divide 250 and 768).
        n_vregions: v-regions (equal slices of the 768 rows) the shape tables are split by.
        latent_rank: factors of the latent count covariance.
        ridge: L2 penalty of the count regression (standardized log-conditions).
        count_rank: rank of the reduced-rank regression of the counts' mean on the degree-2
            polynomial of the conditions (:func:`fast_density.fit_reduced_rank`); 0: the log-linear
            Poisson regression alone (the regressors below).
        quadratic_conditions: add the squares of the standardized log-conditions as regressors.
        cross_conditions: also their pairwise products (for training data spanning wide, joint ranges).
        weight_quantiles: levels of the pixel-weight quantile tables.
        line_jitter_pixels: random jitter of the extra cells' distance to the cluster line.
        hot_min_fraction: pixels firing in more than this fraction of events are hot pixels.
        dead_min_expected: a u column / v row with no hit where this many were expected is dead.
        calib_iters, calib_events, calib_damping: merge-unfolding rounds, events per round, and
            the exponent applied to each correction ratio.
        calib_occ_events: events of the final per-sensor occupancy correction (one per training
            row, cycling; 0: one per training row).
        chunk_events: events read and clustered at once while fitting (memory bound).
        max_train_events: use at most this many training events (0: all).
        generate_batch: events per sampler call.
        max_shape_entries: at most this many (size, u-extent, v-extent) entries in the shape tables
            (the most frequent; every block keeps at least its most frequent one), so the model
            file stays bounded however much training data is used (0: no cap). The dropped rare
            triples' weight goes to the kept ones of their block (renormalization).
        cluster_gan: a ``pxd-cluster-gan`` run folder whose generator becomes the cluster-shape
            stage (its weights are copied into this model: the run folder stays self-contained);
            "" (default): the table cluster model of :mod:`.cluster_model`.
        cluster_gan_min_size: with ``cluster_gan``, clusters of this requested size and larger (up
            to the GAN's ``max_size``) take their pixel pattern and charges from the GAN; smaller
            and larger ones from the tables.
    """

    class_edges: tuple[int, ...] = (2, 3, 6)
    size_buckets: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 9, 11, 14, 18, 24, 32, 48)
    charge_edges: tuple[int, ...] = (14, 20, 30)
    u_bin_pixels: int = 25
    v_bin_pixels: int = 16
    n_vregions: int = 3
    latent_rank: int = 4
    count_rank: int = 3
    ridge: float = 1e-2
    quadratic_conditions: bool = True
    cross_conditions: bool = False
    weight_quantiles: int = 129
    line_jitter_pixels: float = 0.35
    hot_min_fraction: float = 0.5
    dead_min_expected: float = 30.0
    calib_iters: int = 3
    calib_events: int = 60
    calib_damping: float = 0.8
    calib_occ_events: int = 0
    chunk_events: int = 50
    max_train_events: int = 0
    generate_batch: int = 16
    max_shape_entries: int = 40_000
    cluster_gan: str = ""
    cluster_gan_min_size: int = 2
    max_steps: int = 1

    def __post_init__(self):
        super().__post_init__()
        for name, edges in (("class_edges", self.class_edges), ("size_buckets", self.size_buckets)):
            e = list(edges)
            if not e or e[0] < 2 or any(b <= a for a, b in zip(e, e[1:])):
                raise ConfigError(f"{name}: {e} must be strictly increasing sizes >= 2")
        if N_UCELLS % self.u_bin_pixels:
            raise ConfigError(f"u_bin_pixels: {self.u_bin_pixels} must divide {N_UCELLS}")
        if N_VCELLS % self.v_bin_pixels:
            raise ConfigError(f"v_bin_pixels: {self.v_bin_pixels} must divide {N_VCELLS}")
        check_range("n_vregions", self.n_vregions, 1, 64)
        check_range("latent_rank", self.latent_rank, 0, 64)
        check_range("ridge", self.ridge, 0.0, None)
        check_range("weight_quantiles", self.weight_quantiles, 3, 100_000)
        check_range("line_jitter_pixels", self.line_jitter_pixels, 0.0, 10.0, "pixels")
        check_range("hot_min_fraction", self.hot_min_fraction, 0.0, 1.0)
        check_range("dead_min_expected", self.dead_min_expected, 1.0, None)
        check_range("calib_iters", self.calib_iters, 0, 50)
        check_range("calib_events", self.calib_events, 1, 100_000)
        check_range("calib_damping", self.calib_damping, 0.0, 1.0)
        check_range("calib_occ_events", self.calib_occ_events, 0, 1_000_000)
        check_range("count_rank", self.count_rank, 0, 1000)
        check_range("chunk_events", self.chunk_events, 1, 100_000)
        check_range("max_train_events", self.max_train_events, 0, None)
        check_range("generate_batch", self.generate_batch, 1, 100_000)
        check_range("cluster_gan_min_size", self.cluster_gan_min_size, 1, 255, "pixels")
        check_range("max_shape_entries", self.max_shape_entries, 0, None)

    # derived sizes
    @property
    def n_classes(self) -> int:
        return len(self.class_edges) + 1

    @property
    def n_sbuckets(self) -> int:
        return len(self.size_buckets) + 1

    @property
    def n_pos_bins(self) -> int:
        return (N_UCELLS // self.u_bin_pixels) * (N_VCELLS // self.v_bin_pixels)


# name -> torch dtype of every learned buffer (shapes come from the data; loading resizes)
_BUFFERS = {
    "cond_log_mean": torch.float64, "cond_log_chol": torch.float64, "cond_inj_prob": torch.float64,
    "feat_mean": torch.float64, "feat_std": torch.float64, "feat_used": torch.float64, "has_conditions": torch.int64,
    "coef": torch.float64, "poly_b": torch.float64, "poly_floor": torch.float64,
    "occ_num": torch.float64, "occ_den": torch.float64, "load": torch.float64, "diag": torch.float64,
    "pos_prob": torch.float32, "pos_alias": torch.int32,
    "tri_offsets": torch.int64, "tri_swh": torch.int16, "tri_prob": torch.float32,
    "tri_alias": torch.int32, "flip_p": torch.float32,
    "qm_prob": torch.float32, "qm_alias": torch.int32, "weight_q": torch.float32,
    "hot_keys": torch.int64, "hot_p": torch.float32, "hot_q_prob": torch.float32, "hot_q_alias": torch.int32,
    "dead_u": torch.uint8, "dead_v": torch.uint8, "threshold_adu": torch.int64, "n_train_events": torch.int64,
    "cgan_arch": torch.int64, "cgan_flat": torch.float16,
}


class FastPxdModel(nn.Module):
    """Container of the learned tables (buffers only; filled by :meth:`FastPxd.fit`). ``forward`` is
    not used: :func:`sample_fast_event` reads the tables."""

    def __init__(self):
        super().__init__()
        for k, dt in _BUFFERS.items():
            self.register_buffer(k, torch.zeros(0, dtype=dt))

    def set_tables(self, tabs: dict[str, np.ndarray]) -> None:
        for k, dt in _BUFFERS.items():
            self._buffers[k] = torch.as_tensor(np.ascontiguousarray(tabs[k])).to(dt)

    def tables(self) -> dict[str, np.ndarray]:
        """The tables as numpy arrays (CPU views)."""
        if self.threshold_adu.numel() == 0:
            from b2bkg.core.errors import ModelError

            raise ModelError("pxd-fast: the model holds no fitted tables (train it first)")
        return {k: self._buffers[k].detach().cpu().numpy() for k in _BUFFERS}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # run folders written before the cluster-GAN stage existed hold no cgan_* tables: empty = table model
        # nor, before the reduced-rank count mean, poly_* / occ_* tables: empty = log-linear counts model
        for k in ("cgan_arch", "cgan_flat", "poly_b", "poly_floor", "occ_num", "occ_den"):
            state_dict.setdefault(prefix + k, torch.zeros(0, dtype=_BUFFERS[k]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, *_):  # pragma: no cover - tables only
        raise NotImplementedError("pxd-fast samples with sample_fast_event(), not forward()")


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def load_pxd_training(path, max_events: int = 0):
    """Open a training file; returns (reader, n_events, conditions (N, 6) float64 | None)."""
    from b2bkg.core.conditions import CONDITION_NAMES
    from b2bkg.io import open_file

    f = open_file(path)
    if "pxd" not in f.groups:
        f.close()
        raise SchemaError(str(path), "pxd", f"pxd-fast needs a pxd group (file has: {', '.join(f.groups) or 'none'})")
    n = f.n_events if not max_events else min(f.n_events, max_events)
    if n < 2:
        f.close()
        raise ConfigError(f"--data {path}: {n} event(s); pxd-fast needs at least 2")
    cond = None
    c = f.read_conditions(0, n)
    if c is not None:
        names = list(c.names)
        missing = [k for k in CONDITION_NAMES if k not in names]
        if missing:
            f.close()
            raise SchemaError(str(path), "conditions", f"lacks column(s) {missing}")
        cond = np.asarray(c.values, np.float64)[:, [names.index(k) for k in CONDITION_NAMES]]
    return f, n, cond


def _size_class(size: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, size, side="right").astype(np.int64)


def _hist_quantiles(h: np.ndarray, edges: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantiles at ``levels`` of a histogram ``h`` (bins ``edges``), linear inside bins."""
    c = np.concatenate([[0.0], np.cumsum(h, dtype=np.float64)])
    if c[-1] <= 0:
        return np.ones(len(levels))
    c /= c[-1]
    return np.interp(levels, c, edges)


def _accumulate(reader, n_events: int, cfg: FastConfig) -> dict[str, np.ndarray]:
    """Stream the training file twice: pixel-level facts (threshold, hot, dead lines), then clusters."""
    from b2bkg.pxd.clusters import find_clusters

    npix = N_SENSORS * N_UCELLS * N_VCELLS
    ch = cfg.chunk_events
    # --- pass 1: per-pixel fire counts, line counts, threshold
    fires = np.zeros(npix, np.int32)
    thr = 255
    for d in progress(reader.iter_pxd(ch, 0, n_events), total=-(-n_events // ch), desc="pxd-fast: pixels", unit="chunk"):
        key = (d.sensor.astype(np.int64) * N_VCELLS + d.vcell) * N_UCELLS + d.ucell
        fires += np.bincount(key, minlength=npix).astype(np.int32)
        if d.n_hits:
            thr = min(thr, int(d.charge.min()))
    hot = np.flatnonzero(fires > cfg.hot_min_fraction * n_events)
    fires[hot] = 0
    img = fires.reshape(N_SENSORS, N_VCELLS, N_UCELLS)
    col, row = img.sum(1).astype(np.float64), img.sum(2).astype(np.float64)  # (40, 250), (40, 768)
    dead_u = (col == 0) & (np.median(col, 1, keepdims=True) >= cfg.dead_min_expected)
    dead_v = (row == 0) & (np.median(row, 1, keepdims=True) >= cfg.dead_min_expected)
    del fires, img

    K, NSB, NB = cfg.n_classes, cfg.n_sbuckets, cfg.n_pos_bins
    D = N_SENSORS * K
    cedges = np.asarray(cfg.class_edges)
    sedges = np.asarray(cfg.size_buckets)
    nub = N_UCELLS // cfg.u_bin_pixels
    vreg_rows = N_VCELLS / cfg.n_vregions
    counts = np.zeros((n_events, D), np.int64)
    pos_h = np.zeros(D * NB, np.float64)
    tri_keys: list[np.ndarray] = []
    flip = np.zeros((N_GROUPS, K, 2), np.float64)
    qm_h = np.zeros(N_GROUPS * NSB * 256, np.float64)
    NMB = len(cfg.charge_edges) + 1
    x_h = np.zeros(N_GROUPS * NSB * NMB * _XBINS, np.float64)
    size_h = np.zeros((N_GROUPS, _SMAX + 1), np.float64)
    occ_ev = np.zeros((n_events, N_SENSORS), np.float64)
    hot_q = np.zeros(256, np.float64)
    hot_fired = np.zeros(len(hot), np.float64)
    e0 = 0
    for d in progress(reader.iter_pxd(ch, 0, n_events), total=-(-n_events // ch), desc="pxd-fast: clusters", unit="chunk"):
        key = (d.sensor.astype(np.int64) * N_VCELLS + d.vcell) * N_UCELLS + d.ucell
        is_hot = np.isin(key, hot) if len(hot) else np.zeros(len(key), bool)
        if is_hot.any():
            hot_q += np.bincount(d.charge[is_hot], minlength=256)
            hot_fired += np.bincount(np.searchsorted(hot, key[is_hot]), minlength=len(hot))
            ev = d.event_index()[~is_hot]
            d = PxdDigits(np.searchsorted(ev, np.arange(d.n_events + 1)), d.sensor[~is_hot], d.ucell[~is_hot],
                          d.vcell[~is_hot], d.charge[~is_hot])
        cl = find_clusters(d)
        ne = d.n_events
        occ_ev[e0:e0 + ne] = np.bincount(d.event_index() * N_SENSORS + d.sensor, minlength=ne * N_SENSORS).reshape(ne, -1)
        size = cl.size.astype(np.int64)
        sensor = cl.sensor.astype(np.int64)
        g = sensor_group(sensor)
        cls = _size_class(size, cedges)
        dim = sensor * K + cls
        counts[e0:e0 + ne] = np.bincount(cl.event * D + dim, minlength=ne * D).reshape(ne, D)
        ub = np.minimum((cl.u_cog / cfg.u_bin_pixels).astype(np.int64), nub - 1)
        vb = np.minimum((cl.v_cog / cfg.v_bin_pixels).astype(np.int64), N_VCELLS // cfg.v_bin_pixels - 1)
        pos_h += np.bincount(dim * NB + vb * nub + ub, minlength=D * NB)
        vr = np.minimum((cl.v_cog / vreg_rows).astype(np.int64), cfg.n_vregions - 1)
        block = (g * cfg.n_vregions + vr) * K + cls
        tri_keys.append((((block << 12) | np.minimum(size, 4095)) << 20) | (cl.u_extent.astype(np.int64) << 10) | cl.v_extent)
        # orientation: sign of the u-v covariance of the pixels (clusters with W, H > 1)
        lab = cl.hit_cluster
        u = d.ucell.astype(np.float64)
        v = d.vcell.astype(np.float64)
        su, sv = np.bincount(lab, u, cl.n_clusters), np.bincount(lab, v, cl.n_clusters)
        suv = np.bincount(lab, u * v, cl.n_clusters)
        cov = suv / size - su * sv / size**2
        both = (cl.u_extent > 1) & (cl.v_extent > 1)
        np.add.at(flip, (g[both], cls[both], (cov[both] < 0).astype(np.int64)), 1.0)
        sb = _size_class(size, sedges)
        qblock = g * NSB + sb
        m = np.minimum(cl.total_charge.astype(np.int64) // size, 255)
        qm_h += np.bincount(qblock * 256 + m, minlength=N_GROUPS * NSB * 256)
        size_h += np.bincount(g * (_SMAX + 1) + np.minimum(size, _SMAX), minlength=N_GROUPS * (_SMAX + 1)).reshape(N_GROUPS, -1)
        # pixel weights x = s (q - thr) / (Q - thr s) of clusters with s >= 2
        hs = size[lab]
        exc = cl.total_charge.astype(np.int64)[lab] - thr * hs
        okh = (hs >= 2) & (exc > 0)
        x = hs[okh] * (d.charge[okh].astype(np.float64) - thr) / exc[okh]
        xb = np.minimum((x * (_XBINS / _XMAX)).astype(np.int64), _XBINS - 1)
        wblock = qblock * NMB + np.searchsorted(np.asarray(cfg.charge_edges), m, side="right")
        x_h += np.bincount(wblock[lab[okh]] * _XBINS + xb, minlength=N_GROUPS * NSB * NMB * _XBINS)
        e0 += ne
    keys = np.concatenate(tri_keys) if tri_keys else np.zeros(0, np.int64)
    ukeys, kcount = np.unique(keys, return_counts=True)
    return {"threshold": thr, "hot": hot, "hot_p": hot_fired / n_events, "hot_q": hot_q, "dead_u": dead_u,
            "dead_v": dead_v, "counts": counts, "pos_h": pos_h, "tri_keys": ukeys, "tri_count": kcount.astype(np.float64),
            "flip": flip, "qm_h": qm_h, "x_h": x_h, "size_h": size_h / n_events, "occ": occ_ev.mean(0), "occ_ev": occ_ev}


def cap_entries(keys: np.ndarray, counts: np.ndarray, max_entries: int) -> np.ndarray:
    """Boolean mask keeping the ``max_entries`` most frequent table entries (ties: smaller key first)
    plus the most frequent entry of every block (``block = key >> 32``), shape (len(keys),)."""
    keep = np.zeros(len(keys), bool)
    if max_entries <= 0 or len(keys) <= max_entries:
        keep[:] = True
        return keep
    order = np.lexsort((keys, -counts))
    keep[order[:max_entries]] = True
    block = keys >> 32
    by_block = np.lexsort((keys, -counts, block))  # per block, most frequent first
    first = by_block[np.unique(block[by_block], return_index=True)[1]]
    keep[first] = True
    return keep


def _tri_tables(st: dict, cfg: FastConfig, weight: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(size, W, H) categorical per (group, v-region, class) block, from the sorted unique triple keys
    (``block << 32 | size << 20 | W << 10 | H``) and their weights (default: training counts).
    A block never seen in training (a class absent from a region) gets one tiny-weight square
    cluster of the class's smallest size, so every draw is defined."""
    nblocks = N_GROUPS * cfg.n_vregions * cfg.n_classes
    keys = st["tri_keys"]
    w = np.asarray(st["tri_count"] if weight is None else weight, np.float64)
    present = np.zeros(nblocks, bool)
    present[np.unique(keys >> 32)] = True
    empty = np.flatnonzero(~present)
    if len(empty):
        smin = np.concatenate([[1], np.asarray(cfg.class_edges)])[empty % cfg.n_classes]
        side = np.ceil(np.sqrt(smin)).astype(np.int64)
        keys = np.concatenate([keys, (((empty << 12) | smin) << 20) | (side << 10) | side])
        w = np.concatenate([w, np.full(len(empty), 1e-9)])
        o = np.argsort(keys, kind="stable")
        keys, w = keys[o], w[o]
    block = keys >> 32
    swh = np.stack([(keys >> 20) & 4095, (keys >> 10) & 1023, keys & 1023], 1)
    offsets = np.searchsorted(block, np.arange(nblocks + 1)).astype(np.int64)
    alias = BlockedAlias.from_flat(w, offsets)
    return {"tri_offsets": offsets, "tri_swh": swh.astype(np.int16), "tri_weight": w.astype(np.float32),
            "tri_prob": alias.prob, "tri_alias": alias.alias.astype(np.int32), "_tri_keys": keys}


def _quadratic(cfg: FastConfig) -> bool | str:
    """The ``quadratic`` argument of :func:`fast_density.condition_features` for ``cfg``."""
    return "full" if cfg.cross_conditions else cfg.quadratic_conditions


def _fit_tables(st: dict, cond: np.ndarray | None, cfg: FastConfig, seed: int) -> dict[str, np.ndarray]:
    K, NSB, NB = cfg.n_classes, cfg.n_sbuckets, cfg.n_pos_bins
    D = N_SENSORS * K
    n = len(st["counts"])
    tabs: dict[str, np.ndarray] = {}
    # (a) conditions + counts
    if cond is not None:
        dens = fd.fit_conditions_density(cond)
        tabs["has_conditions"] = np.array([1])
    else:
        dens = fd.fit_conditions_density(np.ones((n, 6)) * np.array([1, 1, 1, 1, 1, 0.0]))
        dens["feat_used"][:] = 0.0
        tabs["has_conditions"] = np.array([0])
    tabs.update({"cond_log_mean": dens["log_mean"], "cond_log_chol": dens["log_chol"], "cond_inj_prob": dens["inj_prob"],
                 "feat_mean": dens["feat_mean"], "feat_std": dens["feat_std"], "feat_used": dens["feat_used"]})
    x = fd.condition_features(cond if cond is not None else np.ones((n, 6)), dens["feat_mean"], dens["feat_std"], dens["feat_used"],
                              _quadratic(cfg))
    y = st["counts"].astype(np.float64)
    if cond is not None and cfg.count_rank > 0:
        # mean = reduced-rank polynomial x exp(intercept + injection term): the intercept makes every
        # dimension's training mean exact; the injection flag (a regressor only where both values
        # are frequent enough) scales each dimension; the other log-linear coefficients stay 0
        poly_b = fd.fit_reduced_rank(fd.poly_features(cond), y, cfg.count_rank)
        poly_floor = np.maximum(1e-3 * y.mean(0), 1e-6)
        coef = np.zeros((y.shape[1], x.shape[1]))
        mu = np.exp(fd.count_log_mean(coef, x, poly_b, poly_floor, cond))
        inj = 6  # column of the injection flag in the features [1, 5 log-scales, injection, ...]
        coef[:, 0], coef[:, inj] = fd.fit_offset_flag(y, mu, x[:, inj] if dens["feat_used"][5] else None)
    else:
        coef = fd.fit_poisson_glm(x, y, cfg.ridge)
        poly_b, poly_floor = np.zeros((0, y.shape[1])), np.zeros(0)
    load, diag = fd.fit_latent_covariance(y, np.exp(fd.count_log_mean(coef, x, poly_b, poly_floor, cond)), cfg.latent_rank)
    tabs.update({"coef": coef, "poly_b": poly_b, "poly_floor": poly_floor, "load": load, "diag": diag,
                 "occ_num": np.zeros((0, N_SENSORS)), "occ_den": np.zeros((0, N_SENSORS))})  # occ_*: set by the calibration
    # (b) positions
    pos = BlockedAlias.from_flat(st["pos_h"], np.arange(D + 1, dtype=np.int64) * NB)
    tabs["pos_prob"], tabs["pos_alias"] = pos.prob, pos.alias.astype(np.int32)
    # (c) shapes and charges (rare shape triples capped: bounded model size)
    keep = cap_entries(st["tri_keys"], st["tri_count"], cfg.max_shape_entries)
    tabs["_shape_mass_dropped"] = np.array([1.0 - st["tri_count"][keep].sum() / max(st["tri_count"].sum(), 1.0)])
    tabs.update({k: v for k, v in _tri_tables({"tri_keys": st["tri_keys"][keep], "tri_count": st["tri_count"][keep]}, cfg).items()})
    fl = st["flip"]
    tabs["flip_p"] = ((fl[..., 1] + 0.5) / (fl.sum(-1) + 1.0)).astype(np.float32)
    qm = BlockedAlias.from_flat(st["qm_h"], np.arange(N_GROUPS * NSB + 1, dtype=np.int64) * 256)
    tabs["qm_prob"], tabs["qm_alias"] = qm.prob, qm.alias.astype(np.int32)
    levels = np.linspace(0.0, 1.0, cfg.weight_quantiles)
    edges = np.linspace(0.0, _XMAX, _XBINS + 1)
    NMB = len(cfg.charge_edges) + 1
    xh = st["x_h"].reshape(N_GROUPS * NSB * NMB, _XBINS)
    wq = np.stack([_hist_quantiles(h, edges, levels) for h in xh])
    tabs["weight_q"] = calibrate_weight_tables(wq, st["size_h"], np.asarray(cfg.size_buckets), N_GROUPS,
                                               stream_rng(seed, "pxd-fast.fit.weights"), n_sub=NMB)
    # (d) detector facts
    hq = BlockedAlias.from_flat(st["hot_q"] if st["hot_q"].sum() > 0 else np.ones(256), np.array([0, 256]))
    tabs.update({"hot_keys": st["hot"].astype(np.int64), "hot_p": st["hot_p"].astype(np.float32),
                 "hot_q_prob": hq.prob, "hot_q_alias": hq.alias.astype(np.int32),
                 "dead_u": st["dead_u"].astype(np.uint8), "dead_v": st["dead_v"].astype(np.uint8),
                 "threshold_adu": np.array([st["threshold"]]), "n_train_events": np.array([n])})
    return tabs


# ----------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------
def sample_fast_event(t: dict[str, np.ndarray], cfg: FastConfig, cond: np.ndarray | None, rng: np.random.Generator,
                      hot_pixels: bool = True, *, cluster_filter=None, pixel_filter=None,
                      stats: dict | None = None, cluster_gen="auto") -> dict[str, np.ndarray]:
    """One event of ``pxd-fast``.

    Args:
        t: the model's tables (:meth:`FastPxdModel.tables`).
        cfg: its config.
        cond: beam conditions, shape (6,) (CONDITION_NAMES order), or None: drawn from the learned density.
        rng: the event's generator (all randomness of the event).
        hot_pixels: add the learned hot pixels.
        cluster_filter: optional ``(sensor, u0, v0, w, h) -> bool mask`` over the drawn clusters
            (boxes ``[u0, u0+w-1] x [v0, v0+h-1]``); clusters outside it get no pixels built (ROI
            sampling: the draws up to the shapes are those of the full event).
        pixel_filter: optional ``(sensor, ucell, vcell) -> bool mask`` applied before assembly.
        stats: optional dict filled with ``clusters`` (drawn), ``clusters_built``, ``pixels_built``.
        cluster_gen: ``(generator, cluster-GAN config)`` (:func:`cluster_stage`), None (table model
            only) or "auto" (the GAN the tables hold, if any): clusters of requested size
            ``cfg.cluster_gan_min_size``..GAN ``max_size`` get their pixels and charges from the GAN,
            placed at the drawn centre; the others from the tables.
    Returns:
        digits of the event: ``sensor`` uint8, ``ucell``/``vcell`` uint16, ``charge`` uint8 (ADU),
        shape (n_fired,), sorted by (sensor, vcell, ucell).
    """
    K, NSB, NB = cfg.n_classes, cfg.n_sbuckets, cfg.n_pos_bins
    thr = int(t["threshold_adu"][0])
    if isinstance(cluster_gen, str):
        cluster_gen = cluster_stage(t)
    if cond is None:
        cond = fd.sample_conditions_learned(t["cond_log_mean"], t["cond_log_chol"], float(t["cond_inj_prob"][0]), rng)
    x = fd.condition_features(np.asarray(cond, np.float64)[None], t["feat_mean"], t["feat_std"], t["feat_used"],
                              _quadratic(cfg))[0]
    eta = fd.count_log_mean(t["coef"], x, t["poly_b"], t["poly_floor"], cond)  # (40 K,)
    if t["occ_num"].size:  # per-sensor occupancy calibration factor
        eta = eta + np.repeat(fd.occupancy_log_factor(t["occ_num"], t["occ_den"], cond), K)
    n = fd.sample_counts(eta, t["load"], t["diag"], rng)  # (40 K,)
    dim = np.repeat(np.arange(len(n), dtype=np.int64), n)  # (N,)
    N = len(dim)
    sensor = dim // K
    cls = dim - sensor * K
    g = sensor_group(sensor)
    u = rng.random((8, N), dtype=np.float32)
    # (b) positions
    pos = BlockedAlias(np.arange(len(n) + 1, dtype=np.int64) * NB, t["pos_prob"], t["pos_alias"])
    j = pos.draw(dim, u[0:2]) - dim * NB
    nub = N_UCELLS // cfg.u_bin_pixels
    vb, ub = j // nub, j % nub
    pu = (ub + u[2]) * cfg.u_bin_pixels
    pv = (vb + u[3]) * cfg.v_bin_pixels
    vr = np.minimum((pv * (cfg.n_vregions / N_VCELLS)).astype(np.int64), cfg.n_vregions - 1)
    # (c) shape
    tri = BlockedAlias(t["tri_offsets"], t["tri_prob"], t["tri_alias"])
    k = tri.draw((g * cfg.n_vregions + vr) * K + cls, u[4:6])
    swh = t["tri_swh"][k].astype(np.int64)
    size, w, h = swh[:, 0], swh[:, 1], swh[:, 2]
    flip = u[6] < t["flip_p"][g, cls]
    u0 = np.floor(pu - (w - 1) * 0.5 + 0.5).astype(np.int64)  # cluster box origin (pixels)
    v0 = np.floor(pv - (h - 1) * 0.5 + 0.5).astype(np.int64)
    u7 = u[7]
    use_gan = np.zeros(N, bool)
    if cluster_gen is not None:
        gcfg = cluster_gen[1]
        use_gan = (size >= cfg.cluster_gan_min_size) & (size <= gcfg.max_size)
        # the GAN's patch is the cluster's box (for the ROI filter)
        u0 = np.where(use_gan, np.rint(pu).astype(np.int64) - gcfg.patch_u // 2, u0)
        v0 = np.where(use_gan, np.rint(pv).astype(np.int64) - gcfg.patch_v // 2, v0)
        w = np.where(use_gan, gcfg.patch_u, w)
        h = np.where(use_gan, gcfg.patch_v, h)
    if cluster_filter is not None:
        kk = np.flatnonzero(cluster_filter(sensor, u0, v0, w, h))
        sensor, g, size, w, h, flip, u0, v0, u7, pu, pv, use_gan = (
            a[kk] for a in (sensor, g, size, w, h, flip, u0, v0, u7, pu, pv, use_gan))
    Nk = len(size)
    tab_i = np.flatnonzero(~use_gan)
    gan_i = np.flatnonzero(use_gan)
    sensor_t, g_t, size_t = sensor[tab_i], g[tab_i], size[tab_i]
    ci, du, dv = build_patterns(size_t, w[tab_i], h[tab_i], flip[tab_i], rng, cfg.line_jitter_pixels)
    # charges
    sb = np.searchsorted(np.asarray(cfg.size_buckets), size_t, side="right")
    qb = g_t * NSB + sb
    qm = BlockedAlias(np.arange(N_GROUPS * NSB + 1, dtype=np.int64) * 256, t["qm_prob"], t["qm_alias"])
    m = qm.draw(qb, rng.random((2, len(tab_i)), dtype=np.float32)) - qb * 256
    total = np.floor((m + u7[tab_i]) * size_t).astype(np.int64)
    P = len(ci)
    up = rng.random((2, P))
    wb = qb * (len(cfg.charge_edges) + 1) + np.searchsorted(np.asarray(cfg.charge_edges), m, side="right")
    q = split_charges(ci, size_t, total, t["weight_q"], wb, up[0], up[1], thr)
    ps = sensor_t[ci]
    pu_ = u0[tab_i][ci] + du
    pv_ = v0[tab_i][ci] + dv
    if len(gan_i):
        from .cluster_gan import gan_cluster_pixels

        gci, gu, gv, gq = gan_cluster_pixels(cluster_gen[0], cluster_gen[1], sensor[gan_i], pu[gan_i], pv[gan_i],
                                             size[gan_i], rng)
        ps = np.concatenate([ps, sensor[gan_i][gci]])
        pu_ = np.concatenate([pu_, gu])
        pv_ = np.concatenate([pv_, gv])
        q = np.concatenate([q, gq])
        P += len(gci)
    if stats is not None:
        stats.update(clusters=int(N), clusters_built=int(Nk), pixels_built=int(P))
    # (d) assembly
    ok = (pu_ >= 0) & (pu_ < N_UCELLS) & (pv_ >= 0) & (pv_ < N_VCELLS)
    ps, pu_, pv_, q = ps[ok], pu_[ok], pv_[ok], q[ok]
    alive = (t["dead_u"][ps, pu_] == 0) & (t["dead_v"][ps, pv_] == 0)
    ps, pu_, pv_, q = ps[alive], pu_[alive], pv_[alive], q[alive]
    if hot_pixels and len(t["hot_keys"]):
        hk = t["hot_keys"]
        uh = rng.random((3, len(hk)), dtype=np.float32)
        fire = uh[0] < t["hot_p"]
        hqa = BlockedAlias(np.array([0, 256]), t["hot_q_prob"], t["hot_q_alias"])
        hq = hqa.draw(np.zeros(int(fire.sum()), np.int64), uh[1:, fire])
        hk = hk[fire]
        ps = np.concatenate([ps, hk // (N_UCELLS * N_VCELLS)])
        pv_ = np.concatenate([pv_, (hk // N_UCELLS) % N_VCELLS])
        pu_ = np.concatenate([pu_, hk % N_UCELLS])
        q = np.concatenate([q, hq])
    if pixel_filter is not None:
        inside = pixel_filter(ps, pu_, pv_)
        ps, pu_, pv_, q = ps[inside], pu_[inside], pv_[inside], q[inside]
    return assemble_digits(ps, pu_, pv_, q, thr)


_STAGE_CACHE: dict = {}


def cluster_stage(t: dict[str, np.ndarray]):
    """``(generator, cluster-GAN config)`` held in the tables ``t``, or None (table cluster model).
    The last unpacked generator is cached (keyed by the stored bytes), so per-event calls are cheap."""
    flat = t.get("cgan_flat")
    if flat is None or len(flat) == 0:
        return None
    key = (flat.__array_interface__["data"][0], len(flat), hash(flat[:64].tobytes()), hash(t["cgan_arch"].tobytes()))
    if key not in _STAGE_CACHE:
        from .cluster_gan import unpack_generator

        _STAGE_CACHE.clear()
        _STAGE_CACHE[key] = unpack_generator(t["cgan_arch"], flat)
    return _STAGE_CACHE[key]


def _sample_digits(t, cfg, conds: np.ndarray | None, seeds: list[np.random.Generator], hot_pixels=True) -> PxdDigits:
    gen = cluster_stage(t)
    evs = [sample_fast_event(t, cfg, None if conds is None else conds[i], rng, hot_pixels, cluster_gen=gen)
           for i, rng in enumerate(seeds)]
    return PxdDigits.from_events(evs)


# ----------------------------------------------------------------------------------------------
# merge unfolding (calibration)
# ----------------------------------------------------------------------------------------------
def _calibrate(tabs: dict, st: dict, cond: np.ndarray | None, cfg: FastConfig, seed: int) -> dict[str, float]:
    """Correct the size-table weights and count intercepts so that generated events, after the
    merging of randomly placed clusters, match the training clusters (per group size histogram,
    per (sensor, class) cluster count), then the per-sensor occupancy."""
    from b2bkg.pxd.clusters import find_clusters

    K = cfg.n_classes
    D = N_SENSORS * K
    cedges = np.asarray(cfg.class_edges)
    n_train = len(st["counts"])
    c_all = cond if cond is not None else np.ones((n_train, 6))
    fit0 = {k: tabs[k].copy() for k in ("coef", "poly_b", "poly_floor", "feat_mean", "feat_std", "feat_used")}

    def fitted_counts(rows):
        """(D,) mean over ``rows`` of the fitted (smooth, all-rows) count means before the unfolding:
        its target at the rows it generates (the truth counts of a few rows are too noisy, their
        all-rows mean is at other conditions)."""
        x = fd.condition_features(c_all[rows], fit0["feat_mean"], fit0["feat_std"], fit0["feat_used"], _quadratic(cfg))
        return np.exp(fd.count_log_mean(fit0["coef"], x, fit0["poly_b"], fit0["poly_floor"], c_all[rows])).mean(0)

    out = {}
    tri_keys = tabs.pop("_tri_keys")
    tri_block = tri_keys >> 32
    tri_size = np.minimum((tri_keys >> 20) & 4095, _SMAX)
    tri_group = tri_block // (cfg.n_vregions * K)
    for it in range(cfg.calib_iters):
        rows = (it * cfg.calib_events + np.arange(cfg.calib_events)) % n_train
        target_counts = fitted_counts(rows)
        rngs = [event_rng(seed, "pxd-fast.calibrate", it * 1_000_000 + i) for i in range(cfg.calib_events)]
        d = _sample_digits(tabs, cfg, None if cond is None else cond[rows], rngs, hot_pixels=False)
        cl = find_clusters(d)
        size = cl.size.astype(np.int64)
        g = sensor_group(cl.sensor)
        gen_h = np.bincount(g * (_SMAX + 1) + np.minimum(size, _SMAX), minlength=N_GROUPS * (_SMAX + 1)).reshape(N_GROUPS, -1)
        gen_h = gen_h / cfg.calib_events
        dim = cl.sensor.astype(np.int64) * K + _size_class(size, cedges)
        gen_counts = np.bincount(dim, minlength=D) / cfg.calib_events
        gen_occ = np.bincount(d.sensor, minlength=N_SENSORS) / cfg.calib_events
        out[f"calib{it}_occupancy_bias"] = float(gen_occ.sum() / max(st["occ_ev"][rows].mean(0).sum(), 1e-12) - 1)
        out[f"calib{it}_size_mean_ratio"] = float((gen_h * np.arange(_SMAX + 1)).sum() / gen_h.sum()
                                                  / ((st["size_h"] * np.arange(_SMAX + 1)).sum() / st["size_h"].sum()))
        # size shape within groups, and the cluster counts per (sensor, class)
        a = cfg.calib_damping
        ratio = np.where((gen_h > 0) & (st["size_h"] > 0), st["size_h"] / np.maximum(gen_h, 1e-12), 1.0) ** a
        w = tabs["tri_weight"].astype(np.float64) * ratio[tri_group, tri_size]
        new = _tri_tables({"tri_keys": tri_keys, "tri_count": w}, cfg)
        new.pop("_tri_keys")
        tabs.update(new)
        cr = np.where((gen_counts > 0) & (target_counts > 0), target_counts / np.maximum(gen_counts, 1e-12), 1.0)
        tabs["coef"][:, 0] += a * np.log(cr)
    # occupancy: one generated event per training row (no clustering needed), compared with the
    # truth of the same rows. With the polynomial count mean: a per-sensor factor of the conditions
    # (below). Log-linear model: the occupancy ratio per detector group is regressed on the
    # conditions features (what the cluster mix does with the conditions, e.g. more merging at high
    # luminosity), then per-sensor factors on top, shrunk towards the common one by their
    # statistical significance (James-Stein-like)
    n_occ = cfg.calib_occ_events or n_train
    rows = np.arange(n_occ) % n_train
    rngs = [event_rng(seed, "pxd-fast.calibrate.occ", i) for i in range(n_occ)]
    c_rows = None if cond is None else cond[rows]
    d = _sample_digits(tabs, cfg, c_rows, rngs, hot_pixels=False)
    occ_g = np.bincount(d.event_index() * N_SENSORS + d.sensor, minlength=n_occ * N_SENSORS).reshape(n_occ, -1).astype(np.float64)
    occ_t = st["occ_ev"][rows]
    mg0, mt0 = occ_g.mean(0), occ_t.mean(0)
    ok0 = (mg0 > 0) & (mt0 > 0)
    out["occ_calib_bias_before"] = float(mg0.sum() / max(mt0.sum(), 1e-12) - 1)
    out["occ_calib_sensor_err_before"] = float(np.mean(np.abs(mg0[ok0] / mt0[ok0] - 1)))
    if tabs["poly_b"].size:
        # the factor truth / generated per sensor as a function of the conditions: the ratio of two
        # reduced-rank polynomial regressions of the same form as the count mean, over the same rows
        p = fd.poly_features(c_rows)
        tabs["occ_num"] = fd.fit_reduced_rank(p, occ_t, cfg.count_rank)
        tabs["occ_den"] = fd.fit_reduced_rank(p, occ_g, cfg.count_rank)
        lf = fd.occupancy_log_factor(tabs["occ_num"], tabs["occ_den"], c_rows)  # (n_occ, 40)
        mg = (occ_g * np.exp(lf)).mean(0)
        out["occ_calib_factor_mean_abs_log"] = float(np.abs(lf).mean())
        out["occ_calib_sensor_err_after"] = float(np.mean(np.abs(mg[ok0] / mt0[ok0] - 1)))
        return out
    x_all = fd.condition_features(c_rows if c_rows is not None else np.ones((n_occ, 6)), tabs["feat_mean"], tabs["feat_std"],
                                  tabs["feat_used"] if c_rows is not None else 0.0 * tabs["feat_used"], _quadratic(cfg))
    # one regression per detector group (layer x forward/backward): the groups see different source
    # mixes, so their occupancy per cluster count moves differently with the conditions
    group = sensor_group(np.arange(N_SENSORS))  # (40,) group of each sensor
    slopes = 0.0
    for k in range(N_GROUPS):
        tot_g, tot_t = occ_g[:, group == k].sum(1), occ_t[:, group == k].sum(1)
        okr = (tot_g > 0) & (tot_t > 0)
        if not okr.any():
            continue
        x, r = x_all[okr], np.log(tot_t[okr] / tot_g[okr])
        pen = np.full(x.shape[1], cfg.ridge * len(r) * 10)
        pen[0] = 0.0
        delta = np.linalg.solve(x.T @ x + np.diag(pen) + 1e-9 * np.eye(x.shape[1]), x.T @ r)
        tabs["coef"][np.repeat(group == k, K)] += delta[None, :]
        occ_g[:, group == k] *= np.exp(x_all @ delta)[:, None]  # what the corrected model would give
        slopes += float(np.abs(delta[1:]).sum())
    mg, mt = occ_g.mean(0), occ_t.mean(0)
    ok = (mg > 0) & (mt > 0)
    # variance of log(mt / mg) from the paired rows (ratio estimator): the event-to-event spread of
    # the conditions cancels (both sides share each row's conditions), only the sampling noise stays
    ratio_s = np.where(ok, mt / np.maximum(mg, 1e-12), 1.0)
    var = np.where(ok, (occ_t - ratio_s * occ_g).var(0) / n_occ / np.maximum(mt, 1e-12) ** 2, 0.0)
    d0 = float(np.log(mt.sum() / mg.sum())) if mg.sum() > 0 else 0.0
    diff = np.where(ok, np.log(np.maximum(mt, 1e-12) / np.maximum(mg, 1e-12)), d0) - d0
    shrink = np.clip(1.0 - var / np.maximum(diff**2, 1e-30), 0.0, 1.0)
    corr = d0 + shrink * diff
    tabs["coef"][:, 0] += np.repeat(corr, K)
    out["occ_calib_condition_slopes"] = slopes
    out["occ_calib_mean_shrink"] = float(shrink.mean())
    return out


# ----------------------------------------------------------------------------------------------
# the family
# ----------------------------------------------------------------------------------------------
@register("pxd-fast")
class FastPxd(Family):
    config_cls = FastConfig
    outputs = ("pxd",)
    conditioned = True
    learned_conditions = True
    generate_batch_size = 16
    description = "sparse PXD generator: learned counts density, positions, cluster model, assembly"

    def build(self, cfg):
        return {"model": FastPxdModel()}

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        return str(path)

    def fit(self, cfg, modules, data, seed):
        gan = (np.zeros(0, np.int64), np.zeros(0, np.float16))
        if cfg.cluster_gan:  # checked before the long fit
            from .cluster_gan import load_generator, pack_generator

            gan = pack_generator(*load_generator(cfg.cluster_gan))
        reader, n, cond = load_pxd_training(data, cfg.max_train_events)
        with reader:
            st = _accumulate(reader, n, cfg)
        tabs = _fit_tables(st, cond, cfg, seed)
        tabs["cgan_arch"], tabs["cgan_flat"] = gan
        dropped = float(tabs.pop("_shape_mass_dropped")[0])
        summary = _calibrate(tabs, st, cond, cfg, seed)
        modules["model"].set_tables(tabs)
        summary.update({"n_events": n, "n_hot": len(st["hot"]), "n_dead_u": int(st["dead_u"].sum()),
                        "n_dead_v": int(st["dead_v"].sum()), "threshold_adu": st["threshold"],
                        "n_triples": len(tabs["tri_swh"]), "n_triples_seen": len(st["tri_keys"]),
                        "shape_mass_dropped": dropped})
        return summary

    def load_val(self, cfg, path):
        from b2bkg.io import read_pxd

        return read_pxd(path, 0, min(cfg.val_events, 200))

    def validate(self, modules, cfg, val_data, seed):
        from b2bkg.pxd.metrics import PxdSummary, compare

        n = val_data.n_events
        gen = self.sample(modules, cfg, np.arange(n), seed, "cpu")["pxd"]
        r = compare(PxdSummary.from_digits(val_data), PxdSummary.from_digits(gen), n_boot=0)
        return {k: r[k]["value"] for k in ("occupancy_rel_err_mean_abs", "occupancy_bias", "w1_charge", "ks_cluster_size",
                                           "ks_cluster_total_charge", "ks_cluster_v_extent", "corr_mae")}

    @torch.no_grad()
    def sample(self, modules, cfg, events, seed, device, conditions=None, keep=None):
        """Events ``events`` (global indices); event i uses only ``event_rng(seed, "pxd-fast.generate", i)``
        (and ``event_rng(seed, "pxd-fast.conditions", i)`` for its conditions when none are given).
        ``conditions``: :class:`b2bkg.io.Conditions` of the events (None: drawn from the learned density).
        Returns ``{"pxd": PxdDigits, "conditions": Conditions}`` (the conditions each event was drawn at)."""
        t = modules["model"].tables()
        conds = None
        if conditions is not None:
            from b2bkg.core.conditions import CONDITION_NAMES

            names = list(conditions.names)
            conds = np.asarray(conditions.values, np.float64)[:, [names.index(k) for k in CONDITION_NAMES]]
        events = np.asarray(events).reshape(-1)
        if conds is None:  # learned conditions density, from its own per-event stream
            conds = np.stack([fd.sample_conditions_learned(t["cond_log_mean"], t["cond_log_chol"], float(t["cond_inj_prob"][0]),
                                                           event_rng(seed, COND_DOMAIN, int(e))) for e in events])
            conds = conds.astype(np.float32).astype(np.float64)  # as written to the file: re-drawable exactly
        rngs = [event_rng(seed, SAMPLE_DOMAIN, int(e)) for e in events]
        from b2bkg.core.conditions import CONDITION_NAMES
        from b2bkg.io import Conditions

        return {"pxd": _sample_digits(t, cfg, conds, rngs), "conditions": Conditions(conds.astype(np.float32), CONDITION_NAMES)}
