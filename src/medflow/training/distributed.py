"""DistributedDataParallel plumbing, read from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

A process not started by torchrun is rank 0 of 1 and every helper here is a no-op for it, so the same code
trains on one CPU, one GPU, or N processes on M nodes.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup(device: torch.device) -> torch.device:
    """Joins the process group torchrun describes; returns this rank's device (cuda:LOCAL_RANK on GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        # NCCL and the object collectives put their buffers on the current device.
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    if rank_world()[1] > 1:
        dist.all_reduce(t)
    return t


def broadcast(obj: Any) -> Any:
    """Rank 0's object on every rank: other nodes need not see rank 0's disk."""
    if rank_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's object, in rank order, on every rank."""
    world = rank_world()[1]
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out
