"""DDP under ``torchrun``: process group, gradient averaging, rank-0-only writes.

The trainer runs unchanged as one process or under ``torchrun --nproc_per_node N`` (backend gloo
on CPU, nccl on CUDA). Instead of wrapping modules in ``DistributedDataParallel`` the trainer
averages gradients explicitly after each backward (:func:`average_gradients`, one flat all-reduce
per optimizer step): this works for any loss step, including GAN alternation with several
backward passes, unused parameters and gradient penalties (double backward), which DDP's hooks do
not support. Data are sharded per rank by the data source; only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "average_gradients", "broadcast_modules", "all_mean", "barrier", "gather_objects", "shutdown"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Join the process group if launched by torchrun (``WORLD_SIZE`` > 1); returns the rank info
    and this process's device (``cuda`` -> ``cuda:LOCAL_RANK``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = torch.device(device)
    if world <= 1:
        return DistInfo(), dev
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world,
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank, world, local), dev


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _enabled() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _enabled():
        dist.barrier()


def average_gradients(params) -> None:
    """All-reduce (mean) the ``.grad`` of ``params`` over ranks, in one flat buffer."""
    if not _enabled():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def broadcast_modules(modules) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not _enabled():
        return
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            dist.broadcast(t.data, src=0)


def all_mean(values: dict[str, float], device) -> dict[str, float]:
    """Mean of each float over ranks (same keys on every rank)."""
    if not _enabled() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` when not distributed)."""
    if not _enabled():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
