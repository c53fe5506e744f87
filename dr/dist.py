"""Small torch.distributed helpers that work (as no-ops) without a process group."""
from __future__ import annotations

import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_object(obj) -> list:
    """`[obj of rank 0, obj of rank 1, ...]` on every process; `[obj]` without a process group."""
    size = world()[1]
    if size == 1:
        return [obj]
    out = [None] * size
    dist.all_gather_object(out, obj)
    return out
