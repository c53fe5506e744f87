"""Small torch.distributed helpers that work (as no-ops) without a process group.

`local_only()` makes the code inside it see a world of one process, for work that only the first process
does (a BM25 or cross-encoder evaluation, building a file the others then read): sharded helpers called
there run alone instead of waiting for the others in a collective.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)
_LOCAL_ONLY = [0]


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialized or inside `local_only()`."""
    if not _LOCAL_ONLY[0] and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Inside: `world()` is (0, 1), so no collective is entered."""
    _LOCAL_ONLY[0] += 1
    try:
        yield
    finally:
        _LOCAL_ONLY[0] -= 1


def all_gather_object(obj) -> list:
    """`[obj of rank 0, obj of rank 1, ...]` on every process; `[obj]` without a process group."""
    size = world()[1]
    if size == 1:
        return [obj]
    out = [None] * size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s `obj` on every process."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def init_from_env() -> bool:
    """Join the process group a launcher describes (torchrun / accelerate set WORLD_SIZE, RANK, ...):
    NCCL on GPUs, gloo on CPUs. Returns whether this process is part of a multi-process run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        logger.info("process %d of %d (%s)", dist.get_rank(), dist.get_world_size(), dist.get_backend())
    return True


def shutdown() -> None:
    """Leave the process group `init_from_env` joined, once this process's last collective is done. Left to
    interpreter exit, gloo's threads are sometimes still alive while C++ statics are destroyed, and the
    process dies with "terminate called without an active exception" (SIGABRT) after its work is done."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device() -> str:
    """`cuda:LOCAL_RANK` when torch sees a GPU (each process its own), else `cpu`."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return "cpu"


def release_free_memory() -> None:
    """Hand the allocators' free pages back to the OS: Arrow's memory pool, then glibc (`malloc_trim`).
    After a phase that allocated and freed many objects (Arrow takes of passage texts, tokenizer outputs),
    both keep what was freed, and the process's RSS stays at the phase's peak through the phases that
    follow (measured at 1M passages: ~360 MB held by Arrow's pool after the texts were freed)."""
    import ctypes
    import sys

    pa = sys.modules.get("pyarrow")  # Arrow's own pool (mimalloc/jemalloc) keeps freed pages as well
    if pa is not None:
        pa.default_memory_pool().release_unused()
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # musl or another libc without malloc_trim
        pass


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
