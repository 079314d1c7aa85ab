"""Training data sources: resumable, DDP-sharded batch streams.

The trainer asks a data source for batches with ``next()`` and saves/restores its position with
``state_dict()`` / ``load_state_dict()``, so a resumed run sees exactly the batches an uninterrupted
run would. :class:`ArrayBatches` covers in-memory arrays (most families).

Example:
    >>> import numpy as np
    >>> b = ArrayBatches(np.arange(10.0), batch_size=4, seed=1)
    >>> first = b.next(); state = b.state_dict(); second = b.next()
    >>> b.load_state_dict(state); bool((b.next() == second).all())
    True
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from b2bkg.core.errors import ConfigError
from b2bkg.core.seeding import stream_rng

__all__ = ["Batches", "ArrayBatches", "WrappedBatches"]


class Batches(Protocol):
    """What ``Family.make_data`` returns."""

    def next(self) -> Any:
        """The next batch of this rank (tensors on CPU; the trainer moves them to the device)."""

    def state_dict(self) -> dict[str, int]:
        """Stream position (ints only)."""

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position saved by :meth:`state_dict`."""


class ArrayBatches:
    """Shuffled mini-batches of in-memory arrays, sharded over DDP ranks.

    Epoch ``e`` visits the rows in the order ``stream_rng(seed, "train.shuffle.e").permutation(n)``;
    the GLOBAL batch ``k`` of the epoch is rows ``perm[k*B:(k+1)*B]`` (``B = batch_size``; an
    incomplete last batch is dropped) and rank ``r`` of ``W`` takes its ``r``-th contiguous
    ``B/W`` slice. So the global batches are the same whatever the number of ranks.

    Args:
        arrays: one array or a dict of arrays sharing the first dimension (rows = samples).
        batch_size: global batch size; must be divisible by ``world_size`` and <= number of rows.
        seed: master seed of the shuffling stream.
        rank, world_size: this process's DDP rank and the number of ranks.
        dtype: torch dtype for floating-point arrays (others keep theirs).
        transform: optional ``f(batch) -> batch`` applied to each gathered batch, e.g. to turn
            event indices into dense images: ``ArrayBatches(np.arange(n), B, seed, transform=densify)``.

    Arrays may be anything indexable by a sorted int64 index array (numpy, ``np.memmap``, h5py
    datasets). ``next()`` returns a tensor (or dict of tensors) of shape ``(B/W, ...)`` on CPU,
    or what ``transform`` makes of it.
    """

    def __init__(self, arrays, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, dtype=torch.float32,
                 transform=None):
        self._single = not isinstance(arrays, dict)
        self.arrays = {"x": arrays} if self._single else dict(arrays)
        lengths = {k: len(v) for k, v in self.arrays.items()}
        self.n = next(iter(lengths.values())) if lengths else 0
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"training arrays have different lengths: {lengths}")
        if batch_size % world_size:
            raise ConfigError(f"batch_size: {batch_size} is not divisible by the number of DDP ranks {world_size}")
        if self.n < batch_size:
            raise ConfigError(f"batch_size: {batch_size} is larger than the training sample ({self.n} rows)")
        self.batch_size, self.seed, self.rank, self.world_size, self.dtype = batch_size, seed, rank, world_size, dtype
        self.transform = transform
        self.epoch, self.position = 0, 0
        self._perm_epoch, self._perm = -1, None

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def _permutation(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            self._perm = stream_rng(self.seed, f"train.shuffle.{self.epoch}").permutation(self.n)
            self._perm_epoch = self.epoch
        return self._perm

    def next(self):
        if self.position + self.batch_size > self.n:
            self.epoch, self.position = self.epoch + 1, 0
        per_rank = self.batch_size // self.world_size
        start = self.position + self.rank * per_rank
        idx = np.sort(self._permutation()[start:start + per_rank])  # sorted: faster gathers (h5py too)
        self.position += self.batch_size
        out = {}
        for k, a in self.arrays.items():
            t = torch.as_tensor(np.asarray(a[idx]))
            out[k] = t.to(self.dtype) if t.is_floating_point() else t
        batch = out["x"] if self._single else out
        return self.transform(batch) if self.transform is not None else batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.epoch), "position": int(self.position)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class WrappedBatches:
    """Base of batch streams built on an :class:`ArrayBatches` ``self._b`` (e.g. with a densifying
    ``transform``): ``next``, ``state_dict`` and ``load_state_dict`` are the wrapped stream's."""

    _b: ArrayBatches

    def next(self):
        return self._b.next()

    def state_dict(self):
        return self._b.state_dict()

    def load_state_dict(self, state):
        self._b.load_state_dict(state)
