"""dr.runtime: when the allocator setting applies, and that it really keeps large blocks off mmap."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dr.runtime import allocator_skip_reason

# A child allocates and touches 64 MiB, then prints what configure_allocator did and how much its
# [heap] mapping (the brk heap) grew: with mmap off the block comes from the heap, else from its own mapping.
CHILD = """
import torch
from dr.runtime import configure_allocator

def heap():
    size = 0
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
            size += hi - lo
    return size

did = configure_allocator()
assert configure_allocator() == did  # idempotent
before = heap()
x = torch.ones(64 * 2**20, dtype=torch.uint8)
print(did)
print(heap() - before)
"""


def test_skip_reasons():
    assert allocator_skip_reason({}, "linux") is None
    assert allocator_skip_reason({}, "darwin") == "not Linux"
    assert allocator_skip_reason({"DR_MALLOC": "system"}, "linux") == "DR_MALLOC=system"
    assert allocator_skip_reason({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "linux") == "jemalloc preloaded"
    assert allocator_skip_reason({"MALLOC_TRIM_THRESHOLD_": "0"}, "linux") == \
        "MALLOC_TRIM_THRESHOLD_ set in the environment"


def _child(env_extra: dict[str, str]) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("DR_MALLOC", "LD_PRELOAD")}
    out = subprocess.run([sys.executable, "-c", CHILD], env={**env, **env_extra}, capture_output=True, text=True,
                         check=True)
    did, heap = out.stdout.strip().splitlines()[-2:]
    return did, int(heap)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt; elsewhere it is a no-op")
def test_large_blocks_come_from_the_heap_only_when_configured():
    did, heap = _child({})
    assert did.startswith("glibc: M_MMAP_MAX=0") and heap >= 64 * 2**20
    did, heap = _child({"DR_MALLOC": "system"})
    assert did == "unchanged (DR_MALLOC=system)" and heap < 64 * 2**20
