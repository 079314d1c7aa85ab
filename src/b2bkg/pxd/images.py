"""Sparse PXD digits <-> dense image tensors, and the value transform of the image GANs.

Every PXD image model (the WGAN-GP of seed 002, the event-level GAN, the IEA-GAN) sees a sensor
as an image of 250 (u) x 768 (v) pixels, rows padded to 256 so that five 2x upsamplings from an
8 x 24 grid reach it exactly. Pixel values are mapped to [-1, 1] with the log transform of the
IEA-GAN evaluation::

    x = 2 * log(ADU + 1) / log(256) - 1          ADU 0 -> -1, ADU 255 -> +1

and generated images are mapped back with the inverse, rounded to whole ADU and zero-suppressed
below a threshold (7 ADU by default, the cut of the published evaluation; see REFERENCE.md).

Dense tensors are built on the fly per batch from the sparse hits (:func:`digits_to_dense`); the
dataset itself stays sparse. :func:`dense_to_digits` is the vectorized way back.

Example:
    >>> import numpy as np
    >>> from b2bkg.io.events import PxdDigits
    >>> d = PxdDigits([0, 2], sensor=[3, 3], ucell=[0, 249], vcell=[5, 767], charge=[20, 255])
    >>> x = digits_to_dense(d, [0])            # (1, 40, 256, 768), values in [-1, 1]
    >>> tuple(x.shape), float(x[0, 3, 249, 767])
    ((1, 40, 256, 768), 1.0)
    >>> dense_to_digits(to_adu(crop_rows(x))) == d
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from b2bkg.core.errors import ConfigError, SchemaError
from b2bkg.io.events import N_SENSORS, N_UCELLS, N_VCELLS, PxdDigits

__all__ = [
    "DEFAULT_THRESHOLD_ADU", "ADU_MAX", "PAD_ROWS", "from_adu", "to_adu", "crop_rows", "pad_rows",
    "digits_to_dense", "digits_to_sensor_images", "dense_to_digits",
]

DEFAULT_THRESHOLD_ADU = 7
"""Zero-suppression threshold applied to generated images (REFERENCE.md: the IEA-GAN evaluation cut)."""
ADU_MAX = 255
PAD_ROWS = 256
"""Rows of the padded image grid: 250 u-cells + 6 rows of zeros (ADU 0, x = -1) at the end."""

_LOG256 = math.log(ADU_MAX + 1)


def _check_threshold(threshold_adu) -> int:
    if isinstance(threshold_adu, bool) or not isinstance(threshold_adu, (int, np.integer)) or not 1 <= threshold_adu <= ADU_MAX:
        raise ConfigError(f"threshold_adu: {threshold_adu!r} is not an integer in [1, {ADU_MAX}] ADU (stored digits are zero-suppressed)")
    return int(threshold_adu)


def from_adu(adu: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Forward transform ``x = 2 log(ADU+1)/log(256) - 1``.

    Args:
        adu: pixel charge, any shape, ADU 0..255 (integer or float).

    Returns:
        float32 tensor of the same shape, values in [-1, 1] (0 ADU -> -1, 255 ADU -> 1).
    """
    a = torch.as_tensor(adu).to(torch.float32)
    return 2.0 * torch.log1p(a.clamp(0, ADU_MAX)) / _LOG256 - 1.0


def to_adu(x: torch.Tensor, threshold_adu: int = DEFAULT_THRESHOLD_ADU) -> torch.Tensor:
    """Inverse transform with rounding and zero suppression.

    ``ADU = round(exp((x + 1)/2 * log(256)) - 1)`` clipped to 0..255; pixels below
    ``threshold_adu`` are set to 0 (not fired).

    Args:
        x: generator output, any shape, nominally in [-1, 1] (values outside are clipped).
        threshold_adu: smallest charge kept, 1..255 ADU.

    Returns:
        uint8 tensor of the same shape, ADU; every non-zero value is >= ``threshold_adu``.
    """
    thr = _check_threshold(threshold_adu)
    x = torch.as_tensor(x)
    adu = torch.round(torch.expm1((x.to(torch.float32).clamp(-1.0, 1.0) + 1.0) * (0.5 * _LOG256))).clamp_(0, ADU_MAX)
    adu = adu.to(torch.uint8)
    return adu.masked_fill_(adu < thr, 0)


def crop_rows(x: torch.Tensor, rows: int = N_UCELLS) -> torch.Tensor:
    """Crop padded images back to the sensor: ``(..., 256, 768) -> (..., 250, 768)`` (a view)."""
    if x.shape[-2] < rows:
        raise ValueError(f"crop_rows: image has {x.shape[-2]} rows, fewer than {rows}")
    return x[..., :rows, :]


def pad_rows(x: torch.Tensor, rows: int = PAD_ROWS, value: float = -1.0) -> torch.Tensor:
    """Pad ``(..., 250, 768)`` images to ``(..., rows, 768)`` with ``value`` (-1 = 0 ADU in x space)."""
    extra = rows - x.shape[-2]
    if extra < 0:
        raise ValueError(f"pad_rows: image has {x.shape[-2]} rows, more than {rows}")
    return F.pad(x, (0, 0, 0, extra), value=value) if extra else x


def _event_list(digits: PxdDigits, event_idx) -> np.ndarray:
    n = digits.n_events
    if isinstance(event_idx, slice):
        idx = np.arange(n)[event_idx]
    else:
        idx = np.atleast_1d(np.asarray(event_idx))
        if idx.dtype.kind not in "iu":
            raise ValueError(f"event_idx: expected integer event indices, got dtype {idx.dtype}")
        idx = idx.astype(np.int64)
    if idx.ndim != 1:
        raise ValueError(f"event_idx: expected a 1-d list of events, got shape {idx.shape}")
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        bad = int(idx[(idx < 0) | (idx >= n)][0])
        raise IndexError(f"event_idx: event {bad} out of range 0..{n - 1}")
    return idx


def digits_to_dense(
    digits: PxdDigits,
    event_idx: int | Sequence[int] | np.ndarray | slice,
    sensors: Sequence[int] | np.ndarray | None = None,
    out_shape: tuple[int, int] = (N_UCELLS, N_VCELLS),
    pad_to: int | None = PAD_ROWS,
    *,
    transform: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Dense images of some events, built from the sparse hits of just those events.

    Charges of repeated (sensor, u, v) entries add (overlay semantics), clipped at 255 ADU.
    A coarser ``out_shape`` (an integer divisor of 250 x 768 in each dimension, e.g. (125, 384))
    bins pixels and keeps the largest charge in each bin (max pooling of ADU).

    Args:
        digits: zero-suppressed digits of ``digits.n_events`` events.
        event_idx: event(s) to convert: an int, a sequence/array of ints or a slice.
        sensors: sensor indices 0..39 to include, in output order (default all 40).
        out_shape: (rows, cols) of the pixel grid before padding; (250, 768) = full resolution.
        pad_to: pad rows with 0 ADU up to this many (256 for the image GANs); None = no padding.
        transform: True -> values x in [-1, 1] (:func:`from_adu`); False -> ADU as float32.
        device: device of the returned tensor.

    Returns:
        float32 tensor of shape (E, S, R, C): E = number of events, S = number of sensors,
        R = ``pad_to`` or ``out_shape[0]``, C = ``out_shape[1]`` (E * S * 0.75 MB at full size:
        convert a batch at a time, never the whole dataset).
    """
    idx = _event_list(digits, event_idx)
    if sensors is None:
        sens = np.arange(N_SENSORS)
    else:
        sens = np.atleast_1d(np.asarray(sensors, np.int64))
        if sens.ndim != 1 or len(sens) == 0 or sens.min() < 0 or sens.max() >= N_SENSORS or len(np.unique(sens)) != len(sens):
            raise ValueError(f"sensors: {sensors!r} must be distinct sensor indices in 0..{N_SENSORS - 1}")
    rows, cols = _check_grid(out_shape, pad_to)
    E, S = len(idx), len(sens)
    ev, hit = _hits_of(digits, idx)
    slot = np.full(N_SENSORS, -1, np.int64)
    slot[sens] = np.arange(S)
    s = slot[digits.sensor[hit]]
    keep = s >= 0
    img = _images(digits, hit[keep], ev[keep] * S + s[keep], E * S, (rows, cols), pad_to, transform, device)
    return img.view(E, S, *img.shape[-2:])


def _check_grid(out_shape, pad_to) -> tuple[int, int]:
    rows, cols = (int(out_shape[0]), int(out_shape[1]))
    if rows <= 0 or cols <= 0 or N_UCELLS % rows or N_VCELLS % cols:
        raise ValueError(f"out_shape: {tuple(out_shape)} must divide ({N_UCELLS}, {N_VCELLS}) exactly in each dimension")
    if pad_to is not None and pad_to < rows:
        raise ValueError(f"pad_to: {pad_to} is smaller than the {rows} image rows")
    return rows, cols


def _hits_of(digits: PxdDigits, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of the event in ``idx``, hit index) of every hit of the events ``idx``, no loop over events."""
    starts, stops = digits.offsets[idx], digits.offsets[idx + 1]
    lengths = stops - starts
    total = int(lengths.sum())
    first = np.cumsum(lengths) - lengths  # position of each event's first hit in the output list
    hit = np.repeat(starts - first, lengths) + np.arange(total, dtype=np.int64)
    ev = np.repeat(np.arange(len(idx), dtype=np.int64), lengths)
    return ev, hit


def _images(digits: PxdDigits, hit: np.ndarray, img: np.ndarray, n_img: int, grid: tuple[int, int],
            pad_to: int | None, transform: bool, device) -> torch.Tensor:
    """Scatter the hits ``hit`` into image ``img`` of each -> (n_img, R, C) float32."""
    u = digits.ucell[hit].astype(np.int64)
    v = digits.vcell[hit].astype(np.int64)
    flat = (img * N_UCELLS + u) * N_VCELLS + v
    adu = torch.zeros(n_img * N_UCELLS * N_VCELLS, dtype=torch.float32, device=device)
    adu.index_put_((torch.from_numpy(flat).to(adu.device),),
                   torch.from_numpy(digits.charge[hit].astype(np.float32)).to(adu.device), accumulate=True)
    adu = adu.clamp_(max=ADU_MAX).view(n_img, N_UCELLS, N_VCELLS)
    rows, cols = grid
    if (rows, cols) != (N_UCELLS, N_VCELLS):
        k = (N_UCELLS // rows, N_VCELLS // cols)
        adu = F.max_pool2d(adu.unsqueeze(1), kernel_size=k, stride=k).squeeze(1)
    out = from_adu(adu) if transform else adu
    if pad_to is not None and pad_to > rows:
        out = pad_rows(out, pad_to, value=-1.0 if transform else 0.0)
    return out.contiguous()


def digits_to_sensor_images(
    digits: PxdDigits,
    event_idx: Sequence[int] | np.ndarray,
    sensor_idx: Sequence[int] | np.ndarray,
    out_shape: tuple[int, int] = (N_UCELLS, N_VCELLS),
    pad_to: int | None = PAD_ROWS,
    *,
    transform: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Images of chosen (event, sensor) pairs, e.g. a training batch of single-sensor images.

    Args:
        digits: zero-suppressed digits.
        event_idx, sensor_idx: the N pairs, two integer sequences of the same length N (pairs may repeat).
        out_shape, pad_to, transform, device: as in :func:`digits_to_dense`.

    Returns:
        float32 tensor of shape (N, 1, R, C): image n is sensor ``sensor_idx[n]`` of event ``event_idx[n]``.
    """
    ev = _event_list(digits, np.asarray(event_idx))
    se = np.atleast_1d(np.asarray(sensor_idx))
    if se.shape != ev.shape or se.dtype.kind not in "iu" or (len(se) and (se.min() < 0 or se.max() >= N_SENSORS)):
        raise ValueError(f"sensor_idx: expected {len(ev)} sensor indices in 0..{N_SENSORS - 1} (one per event_idx), got {sensor_idx!r}")
    grid = _check_grid(out_shape, pad_to)
    # build each distinct pair once, then repeat: key = event * 40 + sensor
    keys, pair_of = np.unique(ev * N_SENSORS + se.astype(np.int64), return_inverse=True)
    uniq_ev, ev_pos_of_key = np.unique(keys // N_SENSORS, return_inverse=True)
    table = np.full(len(uniq_ev) * N_SENSORS, -1, np.int64)  # (event position, sensor) -> distinct pair
    table[ev_pos_of_key.reshape(-1) * N_SENSORS + keys % N_SENSORS] = np.arange(len(keys))
    hev, hit = _hits_of(digits, uniq_ev)
    img = table[hev * N_SENSORS + digits.sensor[hit].astype(np.int64)]
    keep = img >= 0
    images = _images(digits, hit[keep], img[keep], len(keys), grid, pad_to, transform, device)  # (P, R, C)
    return images[torch.from_numpy(pair_of.reshape(-1)).to(images.device)].unsqueeze(1)


def dense_to_digits(images: torch.Tensor | np.ndarray, threshold_adu: int = DEFAULT_THRESHOLD_ADU) -> PxdDigits:
    """Zero-suppressed digits from dense ADU images (vectorized, no loop over pixels or events).

    Float input is rounded to whole ADU and clipped to 0..255. Pixels below ``threshold_adu`` are
    dropped. Hits come out ordered by (event, sensor, ucell, vcell).

    Args:
        images: charge per pixel, shape (B, 40, 250, 768), ADU, uint8 or float (tensor or array).
        threshold_adu: smallest charge kept, 1..255 ADU.

    Returns:
        :class:`PxdDigits` with B events.
    """
    thr = _check_threshold(threshold_adu)
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[1:] != (N_SENSORS, N_UCELLS, N_VCELLS):
        raise SchemaError("<images>", None, f"dense PXD images must have shape (B, {N_SENSORS}, {N_UCELLS}, {N_VCELLS}), got {shape}")
    t = torch.as_tensor(images)
    if t.is_floating_point():
        t = torch.round(t.detach()).clamp_(0, ADU_MAX).to(torch.uint8)
    elif t.dtype != torch.uint8:
        t = t.clamp(0, ADU_MAX).to(torch.uint8)
    t = t.detach().cpu()
    mask = t >= thr
    nz = torch.nonzero(mask).numpy()  # (n_hits, 4): event, sensor, u, v in row-major order
    charge = t[mask].numpy()
    counts = np.bincount(nz[:, 0], minlength=shape[0]) if len(nz) else np.zeros(shape[0], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return PxdDigits(offsets, nz[:, 1], nz[:, 2], nz[:, 3], charge)
