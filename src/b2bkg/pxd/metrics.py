"""PXD metrics: occupancies, correlations, charge and cluster spectra, and distances between samples.

Everything is computed from per-event summaries built once from the digits (:class:`PxdSummary`):
fired pixels and charge sums per (event, sensor), cluster counts per (event, sensor), and per-event
*histograms* of every integer-valued quantity (pixel charge 1..255 ADU, cluster size, u/v extent,
total and seed charge, per-image fired-pixel count). Because every compared quantity is an integer,
Wasserstein-1 and Kolmogorov-Smirnov distances computed from the summed histograms are *exactly*
``scipy.stats.wasserstein_distance`` / the ``ks_2samp`` statistic on the raw values, and a bootstrap
over events is a sparse matrix product ``weights (n_boot, n_events) @ hist (n_events, K)``: no
pixel-level array is ever resampled.

Units: occupancy is a fraction of the 250 x 768 = 192 000 pixels of a sensor (0.009 = 0.9 %);
keys ending in ``_pct`` are percent. Charges are ADU. Sizes and extents are pixels.

Distances (:func:`compare`), each a dict ``{value, err}`` (``err`` = standard deviation over
``n_boot`` bootstrap resamplings of the events of both samples):

=============================== ====================================================================
``occupancy_bias``              (mean occupancy generated - truth) / truth, all 40 sensors (signed)
``occupancy_bias_layer1/2``     the same per layer
``occupancy_rel_err_mean_abs``  mean over the 40 sensors of abs(relative occupancy error)
``occupancy_rel_err_max_abs``   largest abs(relative occupancy error) of the 40 sensors
``occupancy_chi2_ndf``          sum over sensors of (difference of the mean occupancies / its
                                standard error from the event-to-event spread)^2, divided by 40:
                                ~1 for samples of the same distribution, grows with the sample
                                size for a real difference (sensitive to one ladder off by 10 %)
``corr_mae``                    mean abs difference of the off-diagonal 40x40 Pearson correlations
                                of per-event sensor occupancies
``w1_charge`` / ``ks_charge``   W1 (ADU) and KS statistic of the fired-pixel charge
``w1_cluster_<f>`` / ``ks_..``  W1 and KS of cluster size, u_extent, v_extent, total_charge,
                                seed_charge (pixels or ADU)
``w1_image_occupancy_pct``      W1 (percent) and KS of the per-image (sensor, event) occupancy
``ks_image_occupancy``
``fpd``                         Frechet distance between Gaussians fitted to per-event physics
                                features (40 sensor occupancies, cluster count, mean pixel charge and
                                mean cluster size per layer), all standardized by the truth's mean
                                and standard deviation (FPD as in JetNet, Kansal et al. 2023,
                                arXiv:2211.10295)
=============================== ====================================================================

Example:
    >>> import numpy as np
    >>> from b2bkg.io.events import PxdDigits
    >>> d = PxdDigits([0, 2, 3], sensor=[0, 16, 0], ucell=[1, 1, 9], vcell=[1, 2, 9], charge=[10, 30, 7])
    >>> occupancy_per_sensor(d)[:, [0, 16]] * 192000
    array([[1., 1.],
           [1., 0.]])
    >>> s = PxdSummary.from_digits(d)
    >>> compare(s, s, n_boot=0)["w1_charge"]["value"]
    0.0
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from b2bkg.core.errors import ConfigError
from b2bkg.core.seeding import stream_rng
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits

from .clusters import CLUSTER_FEATURES, Clusters, find_clusters

__all__ = [
    "image_features", "diversity_check",
    "PIXELS_PER_SENSOR", "SENSOR_LAYER", "SENSOR_LADDER", "SENSOR_NUMBER", "LADDER_NAMES",
    "sensor_counts", "occupancy_per_sensor", "occupancy_per_layer", "occupancy_per_ladder",
    "image_occupancy", "occupancy_correlation", "charge_spectrum", "cluster_features",
    "wasserstein_from_hist", "ks_from_hist", "frechet_distance", "hist_quantile",
    "PxdSummary", "compare", "compare_with_floor", "summarize_pxd", "summarize_from_summary",
    "DISTANCES",
]

PIXELS_PER_SENSOR = N_UCELLS * N_VCELLS  # 192 000
_IDX = np.arange(N_SENSORS)
#: layer (1, 2), ladder (1..8 / 1..12) and sensor number (1, 2) of each sensor index 0..39
SENSOR_LAYER = np.where(_IDX < 16, 1, 2)
SENSOR_LADDER = np.where(_IDX < 16, _IDX // 2 + 1, (_IDX - 16) // 2 + 1)
SENSOR_NUMBER = _IDX % 2 + 1
#: global ladder column 0..19 of each sensor: layer-1 ladders 1..8, then layer-2 ladders 1..12
_SENSOR_LADDER_COL = _IDX // 2
LADDER_NAMES = tuple(f"{la}.{ld}" for la, n in ((1, 8), (2, 12)) for ld in range(1, n + 1))

_CLUSTER_HISTS = CLUSTER_FEATURES  # size, u_extent, v_extent, total_charge, seed_charge

#: distance name -> (unit, one-line description); the keys of compare()'s result
DISTANCES: dict[str, tuple[str, str]] = {
    "occupancy_bias": ("fraction", "(generated - truth) / truth of the mean occupancy, all sensors"),
    "occupancy_bias_layer1": ("fraction", "relative mean-occupancy bias, layer 1"),
    "occupancy_bias_layer2": ("fraction", "relative mean-occupancy bias, layer 2"),
    "occupancy_rel_err_mean_abs": ("fraction", "mean over sensors of abs(relative occupancy error)"),
    "occupancy_rel_err_max_abs": ("fraction", "largest abs(relative occupancy error) of the 40 sensors"),
    "occupancy_chi2_ndf": ("1", "sum over sensors of (mean occupancy difference / its standard error)^2, / 40"),
    "corr_mae": ("1", "mean abs difference of off-diagonal sensor-occupancy correlations"),
    "w1_charge": ("ADU", "Wasserstein-1 of the fired-pixel charge"),
    "ks_charge": ("1", "KS statistic of the fired-pixel charge"),
    **{f"w1_cluster_{f}": ("ADU" if "charge" in f else "pixels", f"Wasserstein-1 of the cluster {f}") for f in _CLUSTER_HISTS},
    **{f"ks_cluster_{f}": ("1", f"KS statistic of the cluster {f}") for f in _CLUSTER_HISTS},
    "w1_image_occupancy_pct": ("percent", "Wasserstein-1 of the per-image (event, sensor) occupancy"),
    "ks_image_occupancy": ("1", "KS statistic of the per-image occupancy"),
    "fpd": ("1", "Frechet distance of standardized per-event physics features"),
}


# ----------------------------------------------------------------------------- plain metrics

def sensor_counts(digits: PxdDigits) -> np.ndarray:
    """Fired pixels per (event, sensor), shape (n_events, 40), int64."""
    key = digits.event_index() * N_SENSORS + digits.sensor
    return np.bincount(key, minlength=digits.n_events * N_SENSORS).reshape(digits.n_events, N_SENSORS)


def occupancy_per_sensor(digits: PxdDigits) -> np.ndarray:
    """Occupancy (fraction of the 192 000 pixels fired) per (event, sensor), shape (n_events, 40)."""
    return sensor_counts(digits) / PIXELS_PER_SENSOR


def _group_occupancy(counts: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    m = np.zeros((N_SENSORS, n_groups))
    m[_IDX, groups] = 1.0
    return (counts @ m) / (PIXELS_PER_SENSOR * m.sum(0))


def occupancy_per_layer(digits: PxdDigits) -> np.ndarray:
    """Occupancy per (event, layer), shape (n_events, 2): fired pixels / pixels of the layer."""
    return _group_occupancy(sensor_counts(digits), SENSOR_LAYER - 1, 2)


def occupancy_per_ladder(digits: PxdDigits) -> np.ndarray:
    """Occupancy per (event, ladder), shape (n_events, 20): columns are ``LADDER_NAMES`` (1.1..2.12)."""
    return _group_occupancy(sensor_counts(digits), _SENSOR_LADDER_COL, 20)


def image_occupancy(digits: PxdDigits) -> np.ndarray:
    """Occupancy of every image (one sensor of one event), flat, shape (n_events * 40,)."""
    return occupancy_per_sensor(digits).ravel()


def occupancy_correlation(occ: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation matrix of per-event sensor occupancies.

    Args:
        occ: per-event occupancies (or counts), shape (n_events, n_sensors).
        weights: optional non-negative event weights, shape (n_events,) (bootstrap multiplicities).

    Returns:
        shape (n_sensors, n_sensors); equals ``np.corrcoef(occ, rowvar=False)`` for unit weights. A
        sensor with no variance gets correlation 0 with every other sensor (1 on the diagonal)
        instead of NaN.
    """
    x = np.asarray(occ, np.float64)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    wsum = w.sum()
    if wsum <= 0:
        return np.eye(x.shape[1])
    mu = (w @ x) / wsum
    xc = x - mu
    cov = (xc * w[:, None]).T @ xc
    sd = np.sqrt(np.diag(cov))
    good = sd > 1e-12 * max(1.0, float(np.abs(mu).max()))
    sd_safe = np.where(good, sd, 1.0)
    corr = cov / np.outer(sd_safe, sd_safe)
    corr[~good, :] = 0.0
    corr[:, ~good] = 0.0
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def charge_spectrum(digits: PxdDigits) -> np.ndarray:
    """Fired-pixel charge histogram, index = ADU 0..255 (index 0 is always 0), shape (256,), int64."""
    return np.bincount(digits.charge, minlength=256)


def cluster_features(clusters: Clusters) -> dict[str, np.ndarray]:
    """Per-cluster features compared between samples: size, u_extent, v_extent (pixels),
    total_charge, seed_charge (ADU); each shape (n_clusters,)."""
    return {f: getattr(clusters, f) for f in CLUSTER_FEATURES}


# ----------------------------------------------------------------------------- distances on histograms

def _pad(a: np.ndarray, k: int) -> np.ndarray:
    if a.shape[-1] == k:
        return a
    pad = [(0, 0)] * (a.ndim - 1) + [(0, k - a.shape[-1])]
    return np.pad(a, pad)


def _cdfs(h1: np.ndarray, h2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = max(h1.shape[-1], h2.shape[-1])
    h1, h2 = _pad(np.asarray(h1, np.float64), k), _pad(np.asarray(h2, np.float64), k)
    with np.errstate(invalid="ignore", divide="ignore"):
        c1 = np.cumsum(h1, -1) / h1.sum(-1, keepdims=True)
        c2 = np.cumsum(h2, -1) / h2.sum(-1, keepdims=True)
    return c1, c2


def wasserstein_from_hist(h1: np.ndarray, h2: np.ndarray, bin_width: float = 1.0) -> np.ndarray:
    """Wasserstein-1 between two histograms on the same integer grid (bin ``k`` holds value ``k``).

    Args:
        h1, h2: counts, shape (..., K1) and (..., K2) (the shorter is zero-padded).
        bin_width: spacing of the grid in the unit of the result.

    Returns:
        shape (...): ``sum_k |F1(k) - F2(k)| * bin_width``, identical to
        ``scipy.stats.wasserstein_distance`` of the underlying values. NaN if a histogram is empty.
    """
    c1, c2 = _cdfs(h1, h2)
    return np.abs(c1 - c2)[..., :-1].sum(-1) * bin_width


def ks_from_hist(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """Two-sample Kolmogorov-Smirnov statistic ``max_k |F1(k) - F2(k)|`` of two integer-grid
    histograms (shapes as :func:`wasserstein_from_hist`); equals ``scipy.stats.ks_2samp(...).statistic``."""
    c1, c2 = _cdfs(h1, h2)
    return np.abs(c1 - c2).max(-1)


def hist_quantile(h: np.ndarray, q: float | np.ndarray) -> np.ndarray:
    """Quantile of the integer values histogrammed in ``h`` (bin k = value k), inverted-CDF definition
    (the smallest value whose CDF reaches q; ``np.quantile(..., method="inverted_cdf")``)."""
    c = np.cumsum(h)
    if c[-1] == 0:
        return np.full(np.shape(q), np.nan)
    return np.searchsorted(c, np.asarray(q) * c[-1], side="left").astype(np.float64)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Frechet (2-Wasserstein) distance between two Gaussians:
    ``|mu1 - mu2|^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))``.

    The trace of the matrix square root is computed as ``sum sqrt(eig(s1 cov2 s1))`` with
    ``s1 = cov1^(1/2)`` (symmetric, so exact zero for identical inputs and no complex round-off;
    equal to ``Tr(scipy.linalg.sqrtm(cov1 @ cov2))``).
    """
    e1, v1 = np.linalg.eigh(cov1)
    s1 = (v1 * np.sqrt(np.clip(e1, 0, None))) @ v1.T
    m = s1 @ cov2 @ s1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)
    return max(d, 0.0)


# ----------------------------------------------------------------------------- per-event summaries

def _event_hist(event: np.ndarray, values: np.ndarray, n_events: int, chunk_cells: int = 20_000_000) -> sp.csr_matrix:
    """Per-event histogram of non-negative integer values as a CSR matrix (n_events, max+1)."""
    values = np.asarray(values, np.int64)
    k = int(values.max()) + 1 if len(values) else 1
    if n_events * k <= chunk_cells:
        dense = np.bincount(event * k + values, minlength=n_events * k).reshape(n_events, k)
        return sp.csr_matrix(dense)
    # large grids: histogram a run of events at a time (event is sorted for digits/clusters)
    step = max(1, chunk_cells // k)
    bounds = np.searchsorted(event, np.arange(0, n_events + step, step))
    blocks = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        e0 = i * step
        ne = min(step, n_events - e0)
        if ne <= 0:
            break
        dense = np.bincount((event[a:b] - e0) * k + values[a:b], minlength=ne * k).reshape(ne, k)
        blocks.append(sp.csr_matrix(dense))
    return sp.vstack(blocks, format="csr")


@dataclass
class PxdSummary:
    """Per-event summaries of a PXD sample, enough for every metric and bootstrap.

    Attributes (n = n_events):
        counts: fired pixels per (event, sensor), shape (n, 40), int64.
        charge_sum: sum of fired-pixel charges per (event, sensor), ADU, shape (n, 40), int64.
        n_clusters: clusters per (event, sensor), shape (n, 40), int64.
        charge_hist: per-event fired-pixel charge histogram, CSR (n, 256), bin k = k ADU.
        cluster_hists: per-event histograms of each cluster feature (size, u_extent, v_extent,
            total_charge, seed_charge), CSR (n, max+1), bin k = value k.
        image_hist: per-event histogram of the fired-pixel count of each of its 40 images, CSR
            (n, max+1).
    """

    counts: np.ndarray
    charge_sum: np.ndarray
    n_clusters: np.ndarray
    charge_hist: sp.csr_matrix
    cluster_hists: dict[str, sp.csr_matrix] = field(default_factory=dict)
    image_hist: sp.csr_matrix | None = None

    @property
    def n_events(self) -> int:
        return len(self.counts)

    @classmethod
    def from_digits(cls, digits: PxdDigits, clusters: Clusters | None = None, *, chunk_events: int = 250) -> "PxdSummary":
        """Summaries of ``digits`` (clusters found here unless given; long samples are processed in
        runs of ``chunk_events`` events to bound memory)."""
        n = digits.n_events
        if clusters is None and n > chunk_events:
            return cls.concat([cls.from_digits(digits.slice(a, min(a + chunk_events, n)))
                               for a in range(0, n, chunk_events)])
        if clusters is None:
            clusters = find_clusters(digits)
        ev = digits.event_index()
        key = ev * N_SENSORS + digits.sensor
        counts = np.bincount(key, minlength=n * N_SENSORS).reshape(n, N_SENSORS)
        qsum = np.bincount(key, weights=digits.charge, minlength=n * N_SENSORS).reshape(n, N_SENSORS)
        ckey = clusters.event * N_SENSORS + clusters.sensor
        ncl = np.bincount(ckey, minlength=n * N_SENSORS).reshape(n, N_SENSORS)
        return cls(
            counts=counts.astype(np.int64),
            charge_sum=np.rint(qsum).astype(np.int64),
            n_clusters=ncl.astype(np.int64),
            charge_hist=_event_hist(ev, digits.charge.astype(np.int64), n) if n else sp.csr_matrix((0, 256)),
            cluster_hists={f: _event_hist(clusters.event, getattr(clusters, f), n) for f in _CLUSTER_HISTS},
            image_hist=_event_hist(np.repeat(np.arange(n), N_SENSORS), counts.ravel(), n),
        )

    @classmethod
    def concat(cls, parts: list["PxdSummary"]) -> "PxdSummary":
        """Summaries of consecutive runs of events joined into one (for streaming large files)."""
        def vstack(ms):
            k = max(m.shape[1] for m in ms)
            return sp.vstack([sp.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], k)) for m in ms], format="csr")
        return cls(
            counts=np.concatenate([p.counts for p in parts]),
            charge_sum=np.concatenate([p.charge_sum for p in parts]),
            n_clusters=np.concatenate([p.n_clusters for p in parts]),
            charge_hist=vstack([p.charge_hist for p in parts]),
            cluster_hists={f: vstack([p.cluster_hists[f] for p in parts]) for f in _CLUSTER_HISTS},
            image_hist=vstack([p.image_hist for p in parts]),
        )

    def take(self, idx: np.ndarray) -> "PxdSummary":
        """Summaries of the events ``idx`` (in that order)."""
        idx = np.asarray(idx, np.int64)
        return PxdSummary(self.counts[idx], self.charge_sum[idx], self.n_clusters[idx], self.charge_hist[idx],
                          {f: h[idx] for f, h in self.cluster_hists.items()}, self.image_hist[idx])

    def physics_features(self) -> np.ndarray:
        """Per-event features of the Frechet distance, shape (n, 46): occupancy of the 40 sensors (%),
        then per layer (1, 2): cluster count, mean fired-pixel charge (ADU), mean cluster size."""
        occ = self.counts / PIXELS_PER_SENSOR * 100
        cols = [occ]
        for layer in (1, 2):
            m = SENSOR_LAYER == layer
            c, q, k = self.counts[:, m].sum(1), self.charge_sum[:, m].sum(1), self.n_clusters[:, m].sum(1)
            cols.append(np.stack([k, q / np.maximum(c, 1), c / np.maximum(k, 1)], 1).astype(np.float64))
        return np.concatenate(cols, 1)


# ----------------------------------------------------------------------------- distances + bootstrap

def _boot_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Row 0: all ones (the sample itself); rows 1..n_boot: multinomial bootstrap multiplicities.
    Shape (n_boot + 1, n), float64."""
    w = np.ones((n_boot + 1, n))
    if n_boot and n:
        idx = rng.integers(0, n, (n_boot, n))
        w[1:] = np.stack([np.bincount(r, minlength=n) for r in idx])
    return w


def _distances_weighted(a: PxdSummary, b: PxdSummary, wa: np.ndarray, wb: np.ndarray) -> dict[str, np.ndarray]:
    """All distances for each row of event weights ``wa`` (R, n_a) and ``wb`` (R, n_b); each (R,)."""
    out: dict[str, np.ndarray] = {}
    # occupancies (weighted mean per sensor)
    ma = (wa @ a.counts) / wa.sum(1, keepdims=True)  # (R, 40)
    mb = (wb @ b.counts) / wb.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["occupancy_bias"] = mb.sum(1) / ma.sum(1) - 1
        for layer in (1, 2):
            m = SENSOR_LAYER == layer
            out[f"occupancy_bias_layer{layer}"] = mb[:, m].sum(1) / ma[:, m].sum(1) - 1
    valid = ma > 0
    rel = np.where(valid, mb / np.where(valid, ma, 1.0) - 1, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["occupancy_rel_err_mean_abs"] = np.abs(rel).sum(1) / valid.sum(1)
    out["occupancy_rel_err_max_abs"] = np.where(valid.any(1), np.abs(rel).max(1), np.nan)
    va, vb = _wvar_of_mean(a.counts, wa, ma), _wvar_of_mean(b.counts, wb, mb)
    var = va + vb
    with np.errstate(invalid="ignore", divide="ignore"):
        chi = np.where(var > 0, (mb - ma) ** 2 / np.where(var > 0, var, 1.0), 0.0)
        out["occupancy_chi2_ndf"] = chi.sum(1) / (var > 0).sum(1)
    off = ~np.eye(N_SENSORS, dtype=bool)
    out["corr_mae"] = np.array([
        np.abs(occupancy_correlation(a.counts, wa[r]) - occupancy_correlation(b.counts, wb[r]))[off].mean()
        for r in range(len(wa))
    ])
    # histogram distances: one sparse product per quantity
    def hd(ha, hb, name, scale=1.0):
        sa, sb = np.asarray(ha.T.dot(wa.T).T), np.asarray(hb.T.dot(wb.T).T)  # (R, K)
        out[f"w1_{name}"] = wasserstein_from_hist(sa, sb) * scale
        out[f"ks_{name}"] = ks_from_hist(sa, sb)
    hd(a.charge_hist, b.charge_hist, "charge")
    for f in _CLUSTER_HISTS:
        hd(a.cluster_hists[f], b.cluster_hists[f], f"cluster_{f}")
    hd(a.image_hist, b.image_hist, "image_occupancy", 100.0 / PIXELS_PER_SENSOR)
    out["w1_image_occupancy_pct"] = out.pop("w1_image_occupancy")
    # Frechet distance on truth-standardized physics features
    fa, fb = a.physics_features(), b.physics_features()
    mu0, sd0 = fa.mean(0), fa.std(0)
    sd0 = np.where(sd0 > 0, sd0, 1.0)
    za, zb = (fa - mu0) / sd0, (fb - mu0) / sd0
    fpd = []
    for r in range(len(wa)):
        fpd.append(frechet_distance(*_wmoments(za, wa[r]), *_wmoments(zb, wb[r])))
    out["fpd"] = np.array(fpd)
    return out


def _wvar_of_mean(x: np.ndarray, w: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Squared standard error of the weighted per-event mean, per weight row and column: (R, K)."""
    ws = w.sum(1, keepdims=True)
    ex2 = (w @ (x.astype(np.float64) ** 2)) / ws
    var = np.clip(ex2 - mean**2, 0, None) * ws / np.maximum(ws - 1, 1)
    return var / ws


def _wmoments(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ws = w.sum()
    mu = (w @ x) / ws
    xc = x - mu
    cov = (xc * w[:, None]).T @ xc / max(ws - 1, 1.0)
    return mu, cov


def compare(truth: PxdSummary, generated: PxdSummary, *, n_boot: int = 50, seed: int = 0) -> dict[str, dict[str, float]]:
    """Distances between two samples with bootstrap errors.

    Args:
        truth, generated: per-event summaries (:meth:`PxdSummary.from_digits`).
        n_boot: bootstrap resamplings (events of both samples drawn with replacement); 0 -> err NaN.
        seed: seed of the bootstrap stream.

    Returns:
        ``{name: {"value": float, "err": float}}`` for every name of :data:`DISTANCES`; ``value``
        is the distance of the samples themselves (0 for identical samples).
    """
    if n_boot < 0:
        raise ConfigError(f"n_boot: {n_boot} must be >= 0")
    if truth.n_events == 0 or generated.n_events == 0:
        raise ConfigError(f"compare: both samples need events (truth has {truth.n_events}, generated {generated.n_events})")
    rng = stream_rng(seed, "pxd.metrics.bootstrap")
    wa = _boot_weights(truth.n_events, n_boot, rng)
    wb = _boot_weights(generated.n_events, n_boot, rng)
    d = _distances_weighted(truth, generated, wa, wb)
    res = {}
    for k in DISTANCES:
        v = d[k]
        fin = v[1:][np.isfinite(v[1:])]
        err = float(np.std(fin, ddof=1)) if len(fin) > 1 else float("nan")
        res[k] = {"value": float(v[0]), "err": err}
    return res


def compare_with_floor(truth: PxdSummary, generated: PxdSummary, truth2: PxdSummary | None = None, *,
                       n_boot: int = 50, seed: int = 0) -> dict[str, dict[str, float]]:
    """:func:`compare`, plus ``floor`` / ``floor_err``: the same distance between ``truth`` and an
    independent truth sample ``truth2`` at the generated sample's size (``truth2`` is cut to its
    first ``generated.n_events`` events when longer; when shorter all of it is used and the
    floor is at a smaller size, which overestimates it)."""
    res = compare(truth, generated, n_boot=n_boot, seed=seed)
    if truth2 is not None:
        t2 = truth2.take(np.arange(min(truth2.n_events, generated.n_events))) if truth2.n_events > generated.n_events else truth2
        fl = compare(truth, t2, n_boot=n_boot, seed=seed + 1)
        for k in res:
            res[k]["floor"] = fl[k]["value"]
            res[k]["floor_err"] = fl[k]["err"]
    return res


# ----------------------------------------------------------------------------- summary statistics

def summarize_from_summary(s: PxdSummary) -> dict:
    """The statistics the calibration and the report need (see :func:`summarize_pxd`)."""
    n = s.n_events
    out: dict = {"n_events": n}
    if n == 0:
        return out
    occ = s.counts / PIXELS_PER_SENSOR  # (n, 40)
    mean_s = occ.mean(0)
    out["hits_per_event"] = float(s.counts.sum(1).mean())
    out["occupancy_pct"] = float(mean_s.mean() * 100)
    for layer in (1, 2):
        m = SENSOR_LAYER == layer
        out[f"occupancy_layer{layer}_pct"] = float(mean_s[m].mean() * 100)
        lad = np.array([mean_s[m & (SENSOR_LADDER == k)].mean() for k in range(1, SENSOR_LADDER[m].max() + 1)]) * 100
        out[f"occupancy_ladders_layer{layer}_pct"] = lad.tolist()
        out[f"ladder_max_over_min_layer{layer}"] = float(lad.max() / lad.min()) if lad.min() > 0 else float("nan")
        out[f"ladder_argmin_layer{layer}"] = int(np.argmin(lad)) + 1
        fwd, bwd = mean_s[m & (SENSOR_NUMBER == 1)].sum(), mean_s[m & (SENSOR_NUMBER == 2)].sum()
        out[f"forward_backward_layer{layer}"] = float(fwd / bwd) if bwd > 0 else float("nan")
        with np.errstate(invalid="ignore", divide="ignore"):
            rel_sd = occ[:, m].std(0, ddof=1) / occ[:, m].mean(0) if n > 1 else np.full(m.sum(), np.nan)
        out[f"occupancy_spread_layer{layer}"] = float(np.nanmean(rel_sd)) if np.isfinite(rel_sd).any() else float("nan")
        c, q = s.counts[:, m].sum(), s.charge_sum[:, m].sum()
        out[f"charge_mean_layer{layer}_adu"] = float(q / c) if c else float("nan")
    out["occupancy_per_sensor_pct"] = (mean_s * 100).tolist()
    img = np.asarray(s.image_hist.sum(0)).ravel()
    qi = hist_quantile(img, [0.1, 0.5, 0.9]) / PIXELS_PER_SENSOR * 100
    out["image_occupancy_q10_pct"], out["image_occupancy_q50_pct"], out["image_occupancy_q90_pct"] = map(float, qi)
    over = int(np.ceil(0.02 * PIXELS_PER_SENSOR))
    out["image_frac_above_2pct"] = float(img[over + 1:].sum() / img.sum()) if img.sum() else float("nan")
    h = np.asarray(s.charge_hist.sum(0)).ravel()
    tot = h.sum()
    if tot:
        vals = np.arange(len(h))
        out["charge_mean_adu"] = float((h * vals).sum() / tot)
        for name, q in (("median", 0.5), ("q10", 0.1), ("q90", 0.9), ("q99", 0.99), ("q999", 0.999)):
            out[f"charge_{name}_adu"] = float(hist_quantile(h, q))
        out["charge_mode_adu"] = int(np.argmax(h))
        out["charge_p_mode"] = float(h.max() / tot)
        out["charge_frac_above_100"] = float(h[101:].sum() / tot)
    hs = np.asarray(s.cluster_hists["size"].sum(0)).ravel()
    ncl = hs.sum()
    out["clusters_per_event"] = float(ncl / n)
    if ncl:
        out["cluster_size_mean"] = float((hs * np.arange(len(hs))).sum() / ncl)
        out["cluster_size1_frac"] = float(hs[1] / ncl) if len(hs) > 1 else 0.0
        out["cluster_size_gt20_frac"] = float(hs[21:].sum() / ncl)
        for f in ("u_extent", "v_extent", "total_charge", "seed_charge"):
            hf = np.asarray(s.cluster_hists[f].sum(0)).ravel()
            out[f"cluster_{f}_mean"] = float((hf * np.arange(len(hf))).sum() / hf.sum())
    return out


def summarize_pxd(digits: PxdDigits, clusters: Clusters | None = None) -> dict:
    """Summary statistics of a PXD sample (all plain floats / lists, JSON-ready).

    Keys: ``n_events``, ``hits_per_event``, ``occupancy_pct`` (all sensors),
    ``occupancy_layer{1,2}_pct``, ``occupancy_ladders_layer{1,2}_pct`` (list per ladder),
    ``ladder_max_over_min_layer{1,2}``, ``ladder_argmin_layer{1,2}`` (1-based ladder),
    ``forward_backward_layer{1,2}`` (sensor .1 / .2 occupancy), ``occupancy_spread_layer{1,2}``
    (mean over sensors of the event-to-event std/mean of the sensor occupancy),
    ``charge_mean_layer{1,2}_adu``, ``occupancy_per_sensor_pct`` (40), per-image occupancy
    quantiles ``image_occupancy_q{10,50,90}_pct`` and ``image_frac_above_2pct``, fired-pixel
    charge ``charge_{mean,median,q10,q90,q99,q999}_adu``, ``charge_mode_adu``, ``charge_p_mode``
    (fraction at the mode), ``charge_frac_above_100``, and clusters: ``clusters_per_event``,
    ``cluster_size_mean``, ``cluster_size1_frac``, ``cluster_size_gt20_frac``,
    ``cluster_{u_extent,v_extent,total_charge,seed_charge}_mean``. Quantiles use the
    inverted-CDF definition on the integer values.
    """
    return summarize_from_summary(PxdSummary.from_digits(digits, clusters))


# -- mode collapse / memorization ---------------------------------------------------------------
def image_features(digits: PxdDigits, block: tuple[int, int] = (25, 24)) -> np.ndarray:
    """Coarse occupancy maps of every (event, sensor) image, for diversity checks.

    Returns:
        float32 array (n_events, 40, 250/block[0] * 768/block[1]): log(1 + fired pixels) per block
        (default 10 x 32 blocks of 25 x 24 pixels).
    """
    br, bc = block
    nr, nc = N_UCELLS // br, N_VCELLS // bc
    ev = digits.event_index().astype(np.int64)
    cell = (digits.ucell.astype(np.int64) // br) * nc + digits.vcell.astype(np.int64) // bc
    flat = (ev * N_SENSORS + digits.sensor.astype(np.int64)) * (nr * nc) + cell
    counts = np.bincount(flat, minlength=digits.n_events * N_SENSORS * nr * nc)
    return np.log1p(counts).astype(np.float32).reshape(digits.n_events, N_SENSORS, nr * nc)


def diversity_check(generated: PxdDigits, train: PxdDigits, truth: PxdDigits) -> dict[str, float]:
    """Mode-collapse check: spread of per-image occupancy and nearest-neighbour distances.

    For every image (event, sensor) of ``generated`` and of the held-out ``truth``, the Euclidean
    distance of its :func:`image_features` to the nearest TRAINING image of the same sensor, and to
    the nearest other image of its own sample (same sensor). A collapsed generator has a small
    spread of occupancy and small within-sample distances; a memorizing one is much closer to the
    training images than held-out truth is.

    Returns:
        ``{"occ_std_pct_<gen|truth>", "occ_iqr_pct_<gen|truth>"`` (per-image occupancy, percent),
        ``"nn_train_<gen|truth>"`` (median distance to the nearest training image),
        ``"nn_self_<gen|truth>"`` (median distance to the nearest other image of the sample)}.
    """
    import torch  # cdist on (n, K) feature matrices

    out: dict[str, float] = {}
    ft = torch.from_numpy(image_features(train))  # (n_train, 40, K)
    for name, d in (("gen", generated), ("truth", truth)):
        occ = image_occupancy(d).ravel() * 100
        out[f"occ_std_pct_{name}"] = float(occ.std())
        out[f"occ_iqr_pct_{name}"] = float(np.subtract(*np.percentile(occ, [75, 25])))
        f = torch.from_numpy(image_features(d))  # (n, 40, K)
        nn_train, nn_self = [], []
        for s in range(N_SENSORS):
            nn_train.append(torch.cdist(f[:, s], ft[:, s]).amin(1))
            dd = torch.cdist(f[:, s], f[:, s])
            dd.fill_diagonal_(float("inf"))
            nn_self.append(dd.amin(1))
        out[f"nn_train_{name}"] = float(torch.cat(nn_train).median())
        out[f"nn_self_{name}"] = float(torch.cat(nn_self).median())
    return out
