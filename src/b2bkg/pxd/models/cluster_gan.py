"""``pxd-cluster-gan``: a conditional WGAN-GP that generates single PXD clusters (seed 001).

Instead of whole 250 x 768 sensors, the generator draws ONE cluster as a small pixel patch with
charges, ``(patch_u, patch_v)`` pixels (u x v, default 16 x 16, centred on the cluster's rounded
charge centre of gravity), conditioned on the cluster size (1..``max_size``, an embedding) and on
where the cluster sits (:data:`CONDITION_FEATURES`: layer, forward/backward sensor, global z, the
v pitch of its row, the ladder's phi): the incidence angle (z) and the pitch shape clusters; the
background source is not in the data, its position is.

Data (:func:`cut_patches`): clusters found with :func:`b2bkg.pxd.clusters.find_clusters` in a
contract-schema truth file, sizes 1..``max_size``, those that fit the patch; the training set is
balanced in cluster size (``per_size`` clusters of every size, drawn with replacement where fewer
exist), as the seed's "training dataset uniform in cluster size".

Pixel transform: ``x = 2 log(q + 1) / log(256) - 1`` in [-1, 1] (``q`` ADU, empty pixels -1); the
generator ends in ``tanh``. Decoding (:func:`decode_patches`): ``q = round(exp((x + 1) log(256) / 2)
- 1)``, pixels below ``threshold_adu`` (7) are cleared, and only the 8-connected component of the
seed (highest-charge) pixel is kept; the seed pixel is kept at >= threshold, so every requested
cluster has at least one pixel. The requested size is a condition, not a constraint: the size of
the decoded cluster is part of what the evaluation measures.

This family makes clusters, not events: ``b2bkg generate`` on its run folder answers with a
one-line error (:attr:`ClusterGan.cannot_generate`); ``pxd-fast`` uses a trained run as its cluster
shape stage (``--set cluster_gan=RUN_DIR``). Evaluation against held-out truth clusters:
:func:`evaluate_cluster_gan` (KS of size, u/v extent, total and seed charge, each beside the
truth-vs-truth floor at the same n), built on :func:`compare_cluster_features`.

Example:
    $ b2bkg train pxd-cluster-gan --data train.h5 --out runs/cgan --config small
    >>> from b2bkg.pxd.models.cluster_gan import evaluate_cluster_gan          # doctest: +SKIP
    >>> evaluate_cluster_gan("runs/cgan", "heldout.h5", "heldout2.h5")         # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from b2bkg.core.config import check_range
from b2bkg.core.errors import ConfigError, SchemaError
from b2bkg.core.seeding import stream_rng
from b2bkg.io.events import PxdDigits
from b2bkg.nn.gan import gradient_penalty
from b2bkg.training.data import ArrayBatches
from b2bkg.training.registry import Family, TrainConfig, register

__all__ = ["ClusterGanConfig", "ClusterGenerator", "ClusterCritic", "ClusterGan", "ClusterSample", "CONDITION_FEATURES",
           "condition_features", "cut_patches", "balanced_indices", "encode_patches", "decode_patches",
           "patch_features", "sample_clusters", "compare_cluster_features", "evaluate_cluster_gan", "load_cluster_sample",
           "pack_generator", "unpack_generator", "load_generator", "gan_cluster_pixels"]

#: per-cluster conditions the generator may take (names of ``ClusterGanConfig.conditions``) and the
#: number of input columns each adds
CONDITION_FEATURES = {"layer": 1, "forward": 1, "z": 1, "v_pitch": 1, "phi": 2, "u": 1}
FEATURE_NAMES = ("size", "u_extent", "v_extent", "total_charge", "seed_charge")
_LOG256 = float(np.log(256.0))


@dataclass(frozen=True)
class ClusterGanConfig(TrainConfig):
    """``pxd-cluster-gan``.

    Attributes:
        patch_u, patch_v: patch size (pixels, u x v); clusters are centred on their rounded charge
            centre of gravity; clusters that do not fit are left out of training.
        max_size: largest cluster size (pixels) trained and generated (sizes 1..max_size).
        conditions: per-cluster conditions (keys of :data:`CONDITION_FEATURES`) besides the size.
        latent_dim: generator noise dimension.
        size_embed: size-embedding dimension (generator and critic).
        g_hidden: generator MLP hidden widths.
        d_channels: critic conv channels (a stride-1 conv, then stride-2 convs).
        d_hidden: critic head width.
        n_critic, gp_lambda: critic updates per generator update; gradient-penalty weight.
        lr, beta1, beta2: Adam.
        threshold_adu: zero-suppression threshold of the decoded patches (ADU).
        decode: ``exact`` (the decoded cluster has exactly the requested size) or ``threshold``
            (whatever is above threshold and connected to the seed): :func:`decode_patches`.
        size_loss: weight of the generator's auxiliary loss pulling its soft count of pixels above
            threshold towards the requested size (0: pure adversarial loss).
        per_size: training clusters per size (balanced training set).
        max_train_events: events of the training file read (0: all; clusters of the first events).
        val_clusters: held-out clusters compared by ``validate``.
    """

    patch_u: int = 16
    patch_v: int = 16
    max_size: int = 30
    conditions: tuple[str, ...] = ("layer", "forward", "z", "v_pitch", "phi")
    latent_dim: int = 16
    size_embed: int = 8
    g_hidden: tuple[int, ...] = (256, 256)
    d_channels: tuple[int, ...] = (16, 32, 32)
    d_hidden: int = 128
    n_critic: int = 2
    gp_lambda: float = 10.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.9
    threshold_adu: int = 7
    decode: str = "exact"
    size_loss: float = 0.5
    per_size: int = 3000
    max_train_events: int = 100
    val_clusters: int = 5000
    batch_size: int = 256
    max_steps: int = 3000
    val_metric: str = "ks_mean"

    def __post_init__(self):
        super().__post_init__()
        check_range("patch_u", self.patch_u, 4, 64, "pixels")
        check_range("patch_v", self.patch_v, 4, 64, "pixels")
        if self.patch_u % 4 or self.patch_v % 4:
            raise ConfigError(f"patch_u, patch_v: {self.patch_u} x {self.patch_v} must be multiples of 4")
        check_range("max_size", self.max_size, 1, 255, "pixels")
        bad = [c for c in self.conditions if c not in CONDITION_FEATURES]
        if bad or len(set(self.conditions)) != len(self.conditions):
            raise ConfigError(f"conditions: {list(self.conditions)} must be distinct names from {list(CONDITION_FEATURES)}")
        check_range("latent_dim", self.latent_dim, 1, 1024)
        check_range("size_embed", self.size_embed, 1, 256)
        if not self.g_hidden or any(h < 1 for h in self.g_hidden):
            raise ConfigError(f"g_hidden: {list(self.g_hidden)} must be one or more positive widths")
        if len(self.d_channels) < 2 or any(c < 1 for c in self.d_channels):
            raise ConfigError(f"d_channels: {list(self.d_channels)} must be >= 2 positive channel counts")
        check_range("d_hidden", self.d_hidden, 1, 8192)
        check_range("n_critic", self.n_critic, 1, 100)
        check_range("gp_lambda", self.gp_lambda, 0.0, None)
        check_range("lr", self.lr, 0.0, 1.0)
        check_range("threshold_adu", self.threshold_adu, 1, 254, "ADU")
        if self.decode not in ("exact", "threshold"):
            raise ConfigError(f"decode: {self.decode!r} is not one of 'exact', 'threshold'")
        check_range("size_loss", self.size_loss, 0.0, None)
        check_range("per_size", self.per_size, 1, 10_000_000)
        check_range("max_train_events", self.max_train_events, 0, None)
        check_range("val_clusters", self.val_clusters, 10, 10_000_000)

    @property
    def n_cond(self) -> int:
        """Columns of the continuous condition vector."""
        return sum(CONDITION_FEATURES[c] for c in self.conditions)


# ----------------------------------------------------------------------------------------------
# data: clusters cut from digits
# ----------------------------------------------------------------------------------------------
@dataclass
class ClusterSample:
    """Clusters of sizes 1..max_size cut from digits (``n`` clusters).

    Attributes:
        patch: charges in the patch, ADU, shape (n, patch_u, patch_v), uint8 (0 = no pixel); only
            the pixels inside the patch (complete where ``fits``).
        fits: the whole cluster lies inside the patch, shape (n,), bool.
        sensor: sensor index, shape (n,), int64.
        u_cog, v_cog: charge centre of gravity (pixels), shape (n,), float64.
        features: exact per-cluster features of the truth clusters (:data:`FEATURE_NAMES` -> (n,) int64).
    """

    patch: np.ndarray
    fits: np.ndarray
    sensor: np.ndarray
    u_cog: np.ndarray
    v_cog: np.ndarray
    features: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.sensor)

    def take(self, idx: np.ndarray) -> "ClusterSample":
        return ClusterSample(self.patch[idx], self.fits[idx], self.sensor[idx], self.u_cog[idx], self.v_cog[idx],
                             {k: v[idx] for k, v in self.features.items()})

    @property
    def size(self) -> np.ndarray:
        return self.features["size"]


def condition_features(sensor: np.ndarray, u_cog: np.ndarray, v_cog: np.ndarray, names) -> np.ndarray:
    """Continuous conditions of clusters, shape (n, sum of widths), float32, O(1) scale.

    Columns in the order of ``names``: ``layer`` (0/1 for layer 1/2), ``forward`` (1 for sensor .1),
    ``z`` (global z of the cluster centre / 50 mm), ``v_pitch`` ((pitch - 70 um) / 15 um of its row),
    ``phi`` (cos, sin of the global azimuth), ``u`` (u_cog / 125 - 1).
    """
    from b2bkg.pxd.geometry import pixel_to_global, v_pitch_mm

    s = np.asarray(sensor, np.int64)
    uc = np.clip(np.rint(u_cog), 0, 249).astype(np.int64)
    vc = np.clip(np.rint(v_cog), 0, 767).astype(np.int64)
    cols = []
    need_xyz = any(n in ("z", "phi") for n in names)
    x = y = z = None
    if need_xyz and len(s):
        x, y, z = pixel_to_global(s, uc, vc)
    for name in names:
        if name == "layer":
            cols.append((s >= 16).astype(np.float64)[:, None])
        elif name == "forward":
            cols.append((s % 2 == 0).astype(np.float64)[:, None])
        elif name == "z":
            cols.append((z / 50.0)[:, None] if len(s) else np.zeros((0, 1)))
        elif name == "v_pitch":
            cols.append(((v_pitch_mm(s, vc) - 0.070) / 0.015)[:, None] if len(s) else np.zeros((0, 1)))
        elif name == "phi":
            cols.append(np.stack([np.cos(np.arctan2(y, x)), np.sin(np.arctan2(y, x))], 1) if len(s) else np.zeros((0, 2)))
        elif name == "u":
            cols.append((np.asarray(u_cog, np.float64) / 125.0 - 1.0)[:, None])
        else:
            raise ConfigError(f"conditions: unknown name {name!r} (allowed: {list(CONDITION_FEATURES)})")
    if not cols:
        return np.zeros((len(s), 0), np.float32)
    return np.concatenate(cols, axis=1).astype(np.float32)


def _offsets(digits: PxdDigits, cl, keep: np.ndarray, patch: tuple[int, int]):
    """Hits of the clusters ``keep`` and their offsets in the patch: (hit index (h,), rank of its
    cluster in ``keep`` (h,), du (h,), dv (h,), fits (len(keep),) bool)."""
    pu, pv = patch
    n = len(keep)
    rank = np.full(cl.n_clusters, -1, np.int64)
    rank[keep] = np.arange(n)
    hc = rank[cl.hit_cluster]
    h = np.flatnonzero(hc >= 0)
    c = hc[h]
    du = digits.ucell[h].astype(np.int64) - (np.rint(cl.u_cog[keep]).astype(np.int64) - pu // 2)[c]
    dv = digits.vcell[h].astype(np.int64) - (np.rint(cl.v_cog[keep]).astype(np.int64) - pv // 2)[c]
    inside = (du >= 0) & (du < pu) & (dv >= 0) & (dv < pv)
    fits = np.bincount(c[~inside], minlength=n) == 0
    return h, c, du, dv, fits


def cut_patches(digits: PxdDigits, patch: tuple[int, int] = (16, 16), max_size: int = 30,
                select: np.ndarray | None = None, clusters=None) -> ClusterSample:
    """Clusters of sizes 1..``max_size`` of ``digits`` as patches centred on their rounded charge cog.

    Args:
        digits: zero-suppressed digits of any number of events.
        patch: (patch_u, patch_v) pixels.
        max_size: largest size kept.
        select: optional indices into the kept clusters (in cluster order) to cut (others are
            skipped before any patch is built: memory stays ~ len(select) x patch).
        clusters: ``find_clusters(digits)`` if already computed.
    Returns:
        :class:`ClusterSample` in cluster order (of ``select`` when given).
    """
    from b2bkg.pxd.clusters import find_clusters

    cl = find_clusters(digits) if clusters is None else clusters
    keep = np.flatnonzero((cl.size >= 1) & (cl.size <= max_size))
    if select is not None:
        keep = keep[np.asarray(select, np.int64)]
    h, c, du, dv, fits = _offsets(digits, cl, keep, patch)
    inside = (du >= 0) & (du < patch[0]) & (dv >= 0) & (dv < patch[1])
    out = np.zeros((len(keep), *patch), np.uint8)
    out[c[inside], du[inside], dv[inside]] = digits.charge[h[inside]]
    feats = {k: getattr(cl, k)[keep].astype(np.int64) for k in FEATURE_NAMES}
    return ClusterSample(out, fits, cl.sensor[keep].astype(np.int64), cl.u_cog[keep], cl.v_cog[keep], feats)


def balanced_indices(size: np.ndarray, per_size: int, max_size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a training set uniform in cluster size: ``per_size`` of every size 1..max_size that
    occurs (with replacement where a size has fewer clusters), shape (<= max_size * per_size,), sorted."""
    size = np.asarray(size, np.int64)
    order = np.argsort(size, kind="stable")
    bounds = np.searchsorted(size[order], np.arange(1, max_size + 2))
    parts = []
    for s in range(max_size):  # one draw per size class (<= 255), not per cluster
        lo, hi = bounds[s], bounds[s + 1]
        if hi > lo:
            parts.append(order[lo + rng.choice(hi - lo, per_size, replace=hi - lo < per_size)])
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def encode_patches(q) -> np.ndarray:
    """Charges (ADU, any shape) -> ``2 log(q + 1) / log(256) - 1`` in [-1, 1], float32."""
    q = np.asarray(q, np.float64)
    return (2.0 * np.log1p(q) / _LOG256 - 1.0).astype(np.float32)


def decode_patches(x: torch.Tensor, threshold_adu: int, size: np.ndarray | None = None) -> np.ndarray:
    """Generator output -> cluster patches.

    Args:
        x: generated patches, shape (n, patch_u, patch_v), values in [-1, 1].
        threshold_adu: pixels below are cleared.
        size: None ("threshold" decoding): the 8-connected component, above threshold, of the
            highest pixel. Or the requested sizes, shape (n,) ("exact" decoding): starting from the
            highest pixel, the cluster grows one 8-neighbour at a time, always the highest remaining
            one, to exactly ``size`` pixels (pixels below threshold taken this way get the threshold).
    Returns:
        uint8 (n, patch_u, patch_v) charges (ADU); the seed (highest) pixel is kept at >= threshold_adu.
    """
    x = x.detach().float().cpu()
    n = x.shape[0]
    q = torch.clamp(torch.round(torch.exp((x + 1.0) * (_LOG256 / 2.0)) - 1.0), 0, 255)
    flat = q.reshape(n, -1)
    seed = flat.argmax(1)
    rows = torch.arange(n)
    comp = torch.zeros_like(flat)
    comp[rows, seed] = 1.0
    comp = comp.reshape(n, 1, *q.shape[1:])
    if size is None:
        mask = (q >= threshold_adu).float().unsqueeze(1)  # (n, 1, U, V)
        mask.reshape(n, -1)[rows, seed] = 1.0
        for _ in range(q.shape[1] * q.shape[2]):  # grows by >= 1 pixel per round until stable
            grown = F.max_pool2d(comp, 3, stride=1, padding=1) * mask
            if torch.equal(grown, comp):
                break
            comp = grown
    else:
        want = torch.as_tensor(np.asarray(size, np.int64))
        xf = x.reshape(n, -1)
        cf = comp.reshape(n, -1)
        for k in range(1, int(want.max()) if n else 0):  # one pixel per round, for all clusters still growing
            idx = torch.nonzero(want > k)[:, 0]  # (a,), shrinks quickly: most clusters are small
            if len(idx) == 0:
                break
            sub = comp[idx]
            cand = (F.max_pool2d(sub, 3, stride=1, padding=1) - sub).reshape(len(idx), -1) > 0
            j = torch.where(cand, xf[idx], torch.full_like(xf[idx], -10.0)).argmax(1)
            ok = cand[torch.arange(len(idx)), j]
            cf[idx[ok], j[ok]] = 1.0
        q = torch.where(comp[:, 0] > 0, torch.clamp(q, min=float(threshold_adu)), torch.zeros_like(q))
    q.reshape(n, -1)[rows, seed] = torch.clamp(q.reshape(n, -1)[rows, seed], min=float(threshold_adu))
    return (q * comp[:, 0]).to(torch.uint8).numpy()


def patch_features(patches: np.ndarray) -> dict[str, np.ndarray]:
    """Features of clusters given as patches (n, U, V) of charges (ADU; 0 = no pixel, one cluster per
    patch): ``size``, ``u_extent``, ``v_extent`` (max - min + 1, 0 for an empty patch),
    ``total_charge``, ``seed_charge`` (ADU); each (n,) int64."""
    p = np.asarray(patches)
    if p.ndim != 3:
        raise ConfigError(f"patches: shape {p.shape}, expected (n, patch_u, patch_v)")
    fired = p > 0
    size = fired.sum((1, 2)).astype(np.int64)
    au, av = fired.any(2), fired.any(1)  # (n, U), (n, V)

    def extent(a):
        idx = np.arange(a.shape[1])
        hi = np.where(a, idx, -1).max(1)
        lo = np.where(a, idx, a.shape[1]).min(1)
        return np.where(a.any(1), hi - lo + 1, 0).astype(np.int64)

    q = p.astype(np.int64)
    return {"size": size, "u_extent": extent(au), "v_extent": extent(av), "total_charge": q.sum((1, 2)),
            "seed_charge": q.reshape(len(q), -1).max(1) if len(q) else np.zeros(0, np.int64)}


# ----------------------------------------------------------------------------------------------
# networks
# ----------------------------------------------------------------------------------------------
class ClusterGenerator(nn.Module):
    """Conditional MLP generator of one cluster patch.

    ``forward(z, size, cond)``: z (B, latent_dim) noise, size (B,) int64 cluster size 1..max_size,
    cond (B, n_cond) float conditions (:func:`condition_features`) -> (B, patch_u, patch_v) in [-1, 1].
    """

    def __init__(self, latent_dim: int, max_size: int, n_cond: int, size_embed: int, hidden, patch):
        super().__init__()
        self.patch = tuple(int(p) for p in patch)
        self.size_embed = nn.Embedding(max_size + 1, size_embed)
        layers, n_in = [], latent_dim + size_embed + n_cond
        for h in hidden:
            layers += [nn.Linear(n_in, h), nn.LeakyReLU(0.2)]
            n_in = h
        layers.append(nn.Linear(n_in, self.patch[0] * self.patch[1]))
        self.net = nn.Sequential(*layers)
        with torch.no_grad():  # start mostly empty: clusters are sparse in their patch
            self.net[-1].bias.fill_(-1.0)

    def forward(self, z: torch.Tensor, size: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z, self.size_embed(size), cond], dim=1)
        return torch.tanh(self.net(h)).reshape(-1, *self.patch)


class ClusterCritic(nn.Module):
    """Conditional WGAN critic of cluster patches.

    ``forward(x, size, cond)``: x (B, patch_u, patch_v) in [-1, 1] -> (B,) scores. Convolutions see
    the pattern; the head also sees the size embedding, the conditions and two smooth summaries of
    the patch (a soft count of pixels above threshold and the summed log-charge) so that the
    size-charge relation is easy to judge.
    """

    def __init__(self, max_size: int, n_cond: int, size_embed: int, channels, hidden: int, patch, threshold_adu: int):
        super().__init__()
        self.x_thr = float(encode_patches(threshold_adu))
        convs, c_in = [nn.Conv2d(1, channels[0], 3, padding=1), nn.LeakyReLU(0.2)], channels[0]
        for c in channels[1:]:
            convs += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in = c
        self.conv = nn.Sequential(*convs)
        red = 2 ** (len(channels) - 1)
        n_flat = c_in * max(patch[0] // red, 1) * max(patch[1] // red, 1)
        self.size_embed = nn.Embedding(max_size + 1, size_embed)
        self.head = nn.Sequential(nn.Linear(n_flat + size_embed + n_cond + 2, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, size: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.unsqueeze(1)).flatten(1)
        soft_n = torch.sigmoid((x - self.x_thr) * 20.0).sum((1, 2), keepdim=False)[:, None] / 10.0
        logq = ((x + 1.0) * 0.5).sum((1, 2))[:, None] / 10.0
        return self.head(torch.cat([h, self.size_embed(size), cond, soft_n, logq], dim=1))[:, 0]


def build_generator(cfg: ClusterGanConfig) -> ClusterGenerator:
    return ClusterGenerator(cfg.latent_dim, cfg.max_size, cfg.n_cond, cfg.size_embed, cfg.g_hidden, (cfg.patch_u, cfg.patch_v))


# ----------------------------------------------------------------------------------------------
# sampling and evaluation (library)
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_clusters(generator: ClusterGenerator, cfg: ClusterGanConfig, size: np.ndarray, cond: np.ndarray,
                    z: np.ndarray, batch: int = 65536) -> np.ndarray:
    """Clusters of requested sizes at given conditions.

    Args:
        generator: a trained :class:`ClusterGenerator` (eval mode).
        size: requested sizes, shape (n,), ints 1..max_size.
        cond: conditions, shape (n, cfg.n_cond) (:func:`condition_features`).
        z: latent noise, shape (n, cfg.latent_dim) (the caller's random stream: determinism).
    Returns:
        uint8 patches (n, patch_u, patch_v), ADU (:func:`decode_patches`).
    """
    size = np.asarray(size, np.int64)
    if len(size) and (size.min() < 1 or size.max() > cfg.max_size):
        raise ConfigError(f"size: values {int(size.min())}..{int(size.max())} outside 1..{cfg.max_size}")
    out = np.zeros((len(size), cfg.patch_u, cfg.patch_v), np.uint8)
    dev = next(generator.parameters()).device
    for a in range(0, len(size), batch):
        b = min(a + batch, len(size))
        x = generator(torch.as_tensor(z[a:b], dtype=torch.float32, device=dev), torch.as_tensor(size[a:b], device=dev),
                      torch.as_tensor(cond[a:b], dtype=torch.float32, device=dev))
        out[a:b] = decode_patches(x, cfg.threshold_adu, size[a:b] if cfg.decode == "exact" else None)
    return out


def _check_features(name: str, f) -> int:
    if not isinstance(f, dict):
        raise ConfigError(f"{name}: expected a dict of per-cluster features {list(FEATURE_NAMES)}, got {type(f).__name__}")
    missing = [k for k in FEATURE_NAMES if k not in f]
    if missing:
        raise ConfigError(f"{name}: missing feature(s) {missing} (needs {list(FEATURE_NAMES)})")
    lens = {k: np.shape(f[k]) for k in FEATURE_NAMES}
    if any(len(s) != 1 for s in lens.values()) or len({s[0] for s in lens.values()}) != 1:
        raise ConfigError(f"{name}: features must be 1-D arrays of one length, got shapes {lens}")
    n = next(iter(lens.values()))[0]
    if n == 0:
        raise ConfigError(f"{name}: no clusters to compare")
    for k in FEATURE_NAMES:
        a = np.asarray(f[k])
        if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all() or (a < 0).any():
            raise ConfigError(f"{name}: feature {k} must be finite and >= 0 (min {np.min(a)})")
    return n


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample KS statistic sup|F_a - F_b| (exact for discrete values: ties handled)."""
    a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, side="right") / len(a) - np.searchsorted(b, grid, side="right") / len(b))))


def compare_cluster_features(truth: dict, generated: dict, truth2: dict | None = None, *, seed: int = 0) -> dict:
    """KS distance of each cluster feature, generated vs truth, beside the truth-vs-truth floor.

    Args:
        truth: held-out truth clusters, ``{feature: (n_t,) array}`` for :data:`FEATURE_NAMES`.
        generated: generated clusters, same keys, (n_g,).
        truth2: a second truth sample (another seed), same keys; the floor is KS(truth, truth2)
            with both subsampled to the size used for the generated comparison.
        seed: seed of the subsampling.
    Returns:
        ``{feature: {"ks": float, "floor": float | None, "n": int}}`` plus ``"n"`` (clusters per side):
        all comparisons use ``n = min(n_t, n_g[, n_t2])`` clusters per sample, drawn without
        replacement, so the KS and its floor are read at the same n.
    Raises:
        ConfigError: a sample is not a dict of equal-length, non-empty, finite, non-negative arrays.
    """
    nt = _check_features("truth", truth)
    ng = _check_features("generated", generated)
    n2 = _check_features("truth2", truth2) if truth2 is not None else None
    n = min(nt, ng, n2 if n2 is not None else nt)
    rng = stream_rng(seed, "cluster-gan.compare")
    it, ig = rng.permutation(nt)[:n], rng.permutation(ng)[:n]
    i2 = rng.permutation(n2)[:n] if n2 is not None else None
    out: dict = {"n": int(n)}
    for k in FEATURE_NAMES:
        t = np.asarray(truth[k])[it]
        out[k] = {"ks": _ks(t, np.asarray(generated[k])[ig]),
                  "floor": _ks(t, np.asarray(truth2[k])[i2]) if truth2 is not None else None, "n": int(n)}
    return out


def load_cluster_sample(path, n_events: int, max_size: int, patch: tuple[int, int], max_clusters: int = 0,
                        seed: int = 0) -> ClusterSample:
    """Clusters (sizes 1..max_size, natural mix) of the first ``n_events`` events of a truth file,
    at most ``max_clusters`` of them (a random subset, 0: all)."""
    from b2bkg.io import open_file

    with open_file(path) as f:
        if "pxd" not in f.groups:
            raise SchemaError(str(path), "pxd", f"cluster sample needs a pxd group (file has: {', '.join(f.groups) or 'none'})")
        n = min(int(n_events), f.n_events) if n_events else f.n_events
        d = f.read_pxd(0, n)
    from b2bkg.pxd.clusters import find_clusters

    select = None
    if max_clusters:
        cl = find_clusters(d)
        n_ok = int(((cl.size >= 1) & (cl.size <= max_size)).sum())
        if n_ok > max_clusters:
            select = np.sort(stream_rng(seed, "cluster-gan.sample").choice(n_ok, max_clusters, replace=False))
    return cut_patches(d, patch, max_size, select)


def generate_like(generator: ClusterGenerator, cfg: ClusterGanConfig, like: ClusterSample, seed: int) -> np.ndarray:
    """One generated cluster per cluster of ``like``, at its size and conditions -> (n, U, V) uint8."""
    cond = condition_features(like.sensor, like.u_cog, like.v_cog, cfg.conditions)
    z = stream_rng(seed, "cluster-gan.generate").standard_normal((len(like), cfg.latent_dim))
    return sample_clusters(generator, cfg, like.size, cond, z)


def evaluate_cluster_gan(run_dir, truth, truth2=None, *, n_events: int = 100, max_clusters: int = 200_000,
                         seed: int = 0) -> dict:
    """Generated clusters vs held-out truth clusters (sizes 1..max_size, their natural mix).

    The generator is asked for one cluster per truth cluster, at that cluster's size and
    conditions; the KS of size, u/v extent, total and seed charge is read beside the floor
    KS(truth, truth2) at the same n (``truth2``: a file simulated with another seed).

    Args:
        run_dir: a ``pxd-cluster-gan`` run folder.
        truth, truth2: contract-schema truth files (held out: seeds other than the training file's).
        n_events: events read from each file; max_clusters: clusters kept per file (random subset).
    Returns:
        :func:`compare_cluster_features`'s dict, plus ``"by_size"``: the same per size range
        (1, 2, 3-5, 6-10, 11-max), ``"by_layer"`` (``"1"``, ``"2"``), and ``"fit_fraction"``: truth
        clusters fitting the patch.
    """
    from b2bkg.generate import load_run

    run = load_run(run_dir)
    if run.family.name != "pxd-cluster-gan":
        raise ConfigError(f"--model {run_dir}: a {run.family.name} run, expected pxd-cluster-gan")
    cfg = run.cfg
    patch = (cfg.patch_u, cfg.patch_v)
    t = load_cluster_sample(truth, n_events, cfg.max_size, patch, max_clusters, seed)
    t2 = load_cluster_sample(truth2, n_events, cfg.max_size, patch, max_clusters, seed + 1) if truth2 is not None else None
    gen = patch_features(generate_like(run.modules["generator"], cfg, t, seed))
    res = compare_cluster_features(t.features, gen, None if t2 is None else t2.features, seed=seed)
    res["by_size"] = {}
    for lo, hi in ((1, 1), (2, 2), (3, 5), (6, 10), (11, cfg.max_size)):
        m = (t.size >= lo) & (t.size <= hi)
        m2 = None if t2 is None else (t2.size >= lo) & (t2.size <= hi)
        if m.sum() == 0 or (m2 is not None and m2.sum() == 0):
            continue
        res["by_size"][f"{lo}-{hi}"] = compare_cluster_features(
            {k: v[m] for k, v in t.features.items()}, {k: v[m] for k, v in gen.items()},
            None if t2 is None else {k: v[m2] for k, v in t2.features.items()}, seed=seed)
    res["by_layer"] = {}
    for layer in (1, 2):
        m = (t.sensor >= 16) == (layer == 2)
        m2 = None if t2 is None else (t2.sensor >= 16) == (layer == 2)
        if m.sum() == 0 or (m2 is not None and m2.sum() == 0):
            continue
        res["by_layer"][str(layer)] = compare_cluster_features(
            {k: v[m] for k, v in t.features.items()}, {k: v[m] for k, v in gen.items()},
            None if t2 is None else {k: v[m2] for k, v in t2.features.items()}, seed=seed)
    res["fit_fraction"] = float(t.fits.mean())
    return res


# ----------------------------------------------------------------------------------------------
# the family
# ----------------------------------------------------------------------------------------------
def _training_set(cfg: ClusterGanConfig, path, seed: int) -> dict[str, np.ndarray]:
    from b2bkg.io import open_file

    with open_file(path) as f:
        if "pxd" not in f.groups:
            raise SchemaError(str(path), "pxd", f"pxd-cluster-gan needs a pxd group (file has: {', '.join(f.groups) or 'none'})")
        n = f.n_events if not cfg.max_train_events else min(f.n_events, cfg.max_train_events)
        d = f.read_pxd(0, n)
    from b2bkg.pxd.clusters import find_clusters

    cl = find_clusters(d)
    keep = np.flatnonzero((cl.size >= 1) & (cl.size <= cfg.max_size))
    fits = _offsets(d, cl, keep, (cfg.patch_u, cfg.patch_v))[4]
    fit = np.flatnonzero(fits)
    if len(fit) == 0:
        raise ConfigError(f"--data {path}: no cluster of size 1..{cfg.max_size} fits a {cfg.patch_u} x {cfg.patch_v} patch")
    idx = fit[balanced_indices(cl.size[keep][fit], cfg.per_size, cfg.max_size, stream_rng(seed, "cluster-gan.balance"))]
    uniq, inv = np.unique(idx, return_inverse=True)  # cut each distinct cluster once
    s = cut_patches(d, (cfg.patch_u, cfg.patch_v), cfg.max_size, select=uniq, clusters=cl).take(inv)
    return {"x": encode_patches(s.patch), "size": s.size.astype(np.int64),
            "cond": condition_features(s.sensor, s.u_cog, s.v_cog, cfg.conditions)}


@register("pxd-cluster-gan")
class ClusterGan(Family):
    config_cls = ClusterGanConfig
    outputs = ()
    cannot_generate = ("it generates single clusters, not events: use the run as pxd-fast's cluster stage "
                       "(b2bkg train pxd-fast --set cluster_gan=RUN_DIR) or b2bkg.pxd.models.cluster_gan.sample_clusters")
    description = "conditional WGAN-GP of single PXD clusters (pixel patch with charges), pxd-fast's cluster stage"

    def build(self, cfg):
        return {"generator": build_generator(cfg),
                "critic": ClusterCritic(cfg.max_size, cfg.n_cond, cfg.size_embed, cfg.d_channels, cfg.d_hidden,
                                        (cfg.patch_u, cfg.patch_v), cfg.threshold_adu)}

    def optimizers(self, cfg, modules):
        return {k: torch.optim.Adam(m.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)) for k, m in modules.items()}

    def make_data(self, cfg, path, seed, rank=0, world_size=1):
        return ArrayBatches(_training_set(cfg, path, seed), cfg.batch_size, seed, rank, world_size)

    def step(self, state, batch, step_idx):
        """n_critic WGAN-GP critic updates, then one generator update; batch: x (B, U, V), size (B,), cond (B, C)."""
        cfg, G, D = state.cfg, state.modules["generator"], state.modules["critic"]
        dev = state.device
        for i in range(cfg.n_critic):
            b = batch if i == 0 else state.next_batch()
            real, size, cond = b["x"], b["size"], b["cond"]
            with torch.no_grad():
                fake = G(torch.randn(len(real), cfg.latent_dim, device=dev), size, cond)
            gp = gradient_penalty(D, real, fake, size, cond)
            wdist = D(real, size, cond).mean() - D(fake, size, cond).mean()
            state.update("critic", -wdist + cfg.gp_lambda * gp)
        size, cond = batch["size"], batch["cond"]
        fake = G(torch.randn(len(size), cfg.latent_dim, device=dev), size, cond)
        g_adv = -D(fake, size, cond).mean()
        soft_n = torch.sigmoid((fake - float(encode_patches(cfg.threshold_adu))) * 20.0).sum((1, 2))
        s_loss = ((soft_n - size) ** 2 / size).mean()
        state.update("generator", g_adv + cfg.size_loss * s_loss)
        return {"wdist": wdist.item(), "gp": gp.item(), "g_loss": g_adv.item(), "size_loss": s_loss.item()}

    def load_val(self, cfg, path):
        return load_cluster_sample(path, 20, cfg.max_size, (cfg.patch_u, cfg.patch_v), cfg.val_clusters, seed=0)

    def validate(self, modules, cfg, val_data, seed):
        gen = patch_features(generate_like(modules["generator"], cfg, val_data, seed))
        r = compare_cluster_features(val_data.features, gen, seed=seed)
        out = {f"ks_{k}": r[k]["ks"] for k in FEATURE_NAMES}
        out["ks_mean"] = float(np.mean([out[f"ks_{k}"] for k in FEATURE_NAMES]))
        return out


# ----------------------------------------------------------------------------------------------
# packing a trained generator into flat buffers (pxd-fast's cluster stage)
# ----------------------------------------------------------------------------------------------
_PACK_VERSION = 1


def pack_generator(generator: ClusterGenerator, cfg: ClusterGanConfig) -> tuple[np.ndarray, np.ndarray]:
    """A trained generator as two flat arrays a host model can keep as buffers.

    Returns:
        ``arch`` int64 (k,): [version, latent_dim, size_embed, max_size, patch_u, patch_v, threshold_adu,
        n_conditions, condition indices (into :data:`CONDITION_FEATURES`)..., n_hidden, hidden widths...];
        ``flat`` float16 (n_params,): the parameters in ``generator.parameters()`` order (float16
        halves the file; the generator runs in float32).
    """
    names = list(CONDITION_FEATURES)
    arch = [_PACK_VERSION, cfg.latent_dim, cfg.size_embed, cfg.max_size, cfg.patch_u, cfg.patch_v, cfg.threshold_adu,
            len(cfg.conditions), *[names.index(c) for c in cfg.conditions], len(cfg.g_hidden), *cfg.g_hidden]
    flat = torch.nn.utils.parameters_to_vector(generator.parameters()).detach().cpu().numpy().astype(np.float16)
    return np.asarray(arch, np.int64), flat


def unpack_generator(arch: np.ndarray, flat: np.ndarray) -> tuple[ClusterGenerator, ClusterGanConfig]:
    """Inverse of :func:`pack_generator`: (generator in eval mode, float32; the config fields it needs)."""
    a = [int(x) for x in np.asarray(arch).reshape(-1)]
    if not a or a[0] != _PACK_VERSION:
        raise ConfigError(f"cluster-GAN buffers: unknown packing version {a[:1]} (expected {_PACK_VERSION})")
    latent, emb, max_size, pu, pv, thr, nc = a[1:8]
    names = list(CONDITION_FEATURES)
    conds = tuple(names[i] for i in a[8:8 + nc])
    nh = a[8 + nc]
    hidden = tuple(a[9 + nc:9 + nc + nh])
    cfg = ClusterGanConfig(patch_u=pu, patch_v=pv, max_size=max_size, conditions=conds, latent_dim=latent, size_embed=emb,
                           g_hidden=hidden, threshold_adu=thr)
    gen = build_generator(cfg)
    vec = torch.as_tensor(np.asarray(flat, np.float32))
    n_par = sum(p.numel() for p in gen.parameters())
    if vec.numel() != n_par:
        raise ConfigError(f"cluster-GAN buffers: {vec.numel()} parameters stored, the architecture needs {n_par}")
    torch.nn.utils.vector_to_parameters(vec, gen.parameters())
    return gen.eval(), cfg


def load_generator(run_dir) -> tuple[ClusterGenerator, ClusterGanConfig]:
    """The generator (weights as :func:`b2bkg.generate.load_run` picks them) and config of a run folder."""
    from b2bkg.generate import load_run

    if not (Path(run_dir) / "config.yaml").is_file():
        raise ConfigError(f"cluster_gan: {run_dir} is not a run folder (no config.yaml)")
    run = load_run(run_dir)
    if run.family.name != "pxd-cluster-gan":
        raise ConfigError(f"cluster_gan: {run_dir} is a {run.family.name} run, expected pxd-cluster-gan")
    return run.modules["generator"].eval(), run.cfg


def gan_cluster_pixels(generator: ClusterGenerator, cfg: ClusterGanConfig, sensor: np.ndarray, u_cog: np.ndarray,
                       v_cog: np.ndarray, size: np.ndarray, rng: np.random.Generator):
    """Pixels of clusters drawn by the GAN at requested sizes and centres (pxd-fast's shape stage).

    Args:
        sensor: sensor index, shape (n,); u_cog, v_cog: requested charge centres (pixels), (n,) float.
        size: requested sizes 1..max_size, (n,).
        rng: the event's generator (latent noise).
    Returns:
        (cluster index (P,), ucell (P,), vcell (P,) int64 (may fall off the sensor: the caller drops
        those), charge (P,) int64 ADU) of all fired patch pixels, grouped by cluster.
    """
    n = len(size)
    cond = condition_features(sensor, u_cog, v_cog, cfg.conditions)
    z = rng.standard_normal((n, cfg.latent_dim)).astype(np.float32)
    p = sample_clusters(generator, cfg, size, cond, z)
    ci, du, dv = np.nonzero(p)
    q = p[ci, du, dv].astype(np.int64)
    u0 = np.rint(u_cog).astype(np.int64) - cfg.patch_u // 2
    v0 = np.rint(v_cog).astype(np.int64) - cfg.patch_v // 2
    return ci.astype(np.int64), u0[ci] + du, v0[ci] + dv, q
