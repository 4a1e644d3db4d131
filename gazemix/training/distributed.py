"""``torchrun`` support: process-group setup from the environment and cross-rank reductions.

``torchrun --nproc-per-node N -m gazemix train ...`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; the
backend is NCCL on CUDA and gloo on CPU. Rank 0 writes every output file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["DistInfo", "all_reduce_sum", "broadcast_object", "cleanup", "setup"]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: torch.device) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(0, 1, device)
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, device)


def all_reduce_sum(values: Tensor, info: DistInfo) -> Tensor:
    """Sum a small tensor over ranks (identity in a single process)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_object(value: object, info: DistInfo) -> object:
    """Rank 0's ``value`` on every rank (identity in a single process); picklable objects only."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=info.device if info.device.type == "cuda" else None)
    return box[0]


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
