"""Process-level settings that make CPU tensors cheap: glibc's allocator kept off `mmap`.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB on 64-bit Linux) with a
fresh `mmap` and hands it back with `munmap` when freed. A transformer step on the CPU allocates and
frees hundreds of such blocks (attention scores of shape (batch, heads, length, length), their softmax,
dropout masks, gradients), so every one of them is page-faulted in again, zero-filled by the kernel,
and unmapped. On a 2-core AMD EPYC (Zen 5), a process timing five fp32 training steps of all-MiniLM-L6-v2
(`scripts/bench_step.py mfu`) spent 45 s in the kernel (7.9 million page faults) against 89 s in user code,
at 9.2 s a step; with the settings below: 10 s, 1.2 million faults, 5.3 s a step (docs/BENCHMARKS.md).
PyTorch's CPU tuning guide gives the same advice through jemalloc or tcmalloc; this does it with the
allocator every Linux Python already has.

`configure_allocator()` sets, through `mallopt`:
- `M_MMAP_MAX = 0`: no block is served by `mmap`; large blocks come from the heap and, once freed,
  are reused by the next step's blocks of the same size;
- `M_TRIM_THRESHOLD` = 2 GiB - 1: freed memory at the top of the heap is not handed back to the kernel
  after every step.
The cost is that memory freed after a peak stays with the process (peak RSS itself barely moves: +6% on
the fp32 step above). It is a no-op where it does not apply: not Linux with glibc, an allocator already
preloaded (jemalloc, tcmalloc, mimalloc), the user's own `MALLOC_*` settings in the environment, or
`DR_MALLOC=system`. The entry points (`dr.train`, `dr.evaluate`, `dr.mine`, `dr.score`) call it; library
users call it once at start-up.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int
_PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")
_USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def allocator_skip_reason(environ: dict[str, str] | None = None, platform: str | None = None) -> str | None:
    """Why `configure_allocator` would leave the allocator alone, or None when it applies. Pure."""
    env = os.environ if environ is None else environ
    if (platform or sys.platform) != "linux":
        return "not Linux"
    if env.get("DR_MALLOC", "").lower() == "system":
        return "DR_MALLOC=system"
    preload = env.get("LD_PRELOAD", "")
    for name in _PRELOADED:
        if name in preload:
            return f"{name} preloaded"
    for name in _USER_SETTINGS:
        if name in env:
            return f"{name} set in the environment"
    return None


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # musl has no such symbol
        return libc
    except (OSError, AttributeError):
        return None


@functools.lru_cache(maxsize=1)
def configure_allocator() -> str:
    """Keep glibc's malloc off mmap for this process (see the module doc). Idempotent; returns what it did."""
    reason = allocator_skip_reason()
    libc = None if reason else _glibc()
    if reason is None and libc is None:
        reason = "no glibc"
    if reason is not None:
        logger.info("allocator: left as it is (%s)", reason)
        return f"unchanged ({reason})"
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        logger.warning("allocator: glibc mallopt refused M_MMAP_MAX=0 / M_TRIM_THRESHOLD; left as it is")
        return "unchanged (mallopt refused)"
    logger.info("allocator: glibc malloc without mmap, trim threshold %d (DR_MALLOC=system to keep the default)",
                TRIM_THRESHOLD)
    return "glibc: M_MMAP_MAX=0, M_TRIM_THRESHOLD=2147483647"
