"""Which floating-point precision to compute in, and the one probe that decides `auto`.

`auto` means bf16 where the hardware multiplies bf16 natively (CUDA devices that report bf16 support;
CPUs with AMX or AVX512-BF16) and fp32 elsewhere: on an AVX2-only CPU bf16 is emulated and slower than
fp32. The same probe serves encoding (`model.precision`) and training (`trainer.mixed_precision`), and the
choice is logged once per (request, device) with its reason. `DR_NATIVE_BF16=0` (or `=1`) overrides what
the CPU probe finds, e.g. to reproduce fp32 figures on a bf16 CPU (the test suite sets it to 0).

Measured (docs/BENCHMARKS.md): all-MiniLM-L6-v2 encodes 2.3x faster under bf16 autocast on an AMD EPYC
with AVX512-BF16 and 3.7x on a Xeon with AMX, embeddings at cosine >= 0.9999 to fp32.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

logger = logging.getLogger(__name__)

PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_ALIASES = {"no": "fp32", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 matmul
_logged: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Precision:
    """A resolved precision: `name` is fp32, bf16 or fp16; `reason` says why it was chosen."""

    name: Literal["fp32", "bf16", "fp16"]
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for fp32."""
        return _DTYPES.get(self.name)

    @property
    def accelerate(self) -> str:
        """Accelerate's `mixed_precision` spelling."""
        return "no" if self.name == "fp32" else self.name


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return frozenset()
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_native_bf16() -> str | None:
    """The flag that gives this CPU native bf16 matmul, or None; `DR_NATIVE_BF16` overrides the probe."""
    forced = os.environ.get("DR_NATIVE_BF16")
    if forced is not None:
        return "DR_NATIVE_BF16=1" if forced.strip().lower() in ("1", "true", "yes") else None
    flags = cpu_flags()
    return next((f for f in BF16_CPU_FLAGS if f in flags), None)


def cuda_bf16() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_precision(requested: str, device_type: str, purpose: str = "encoding") -> Precision:
    """`auto | fp32 | bf16 | fp16` (or Accelerate's `no`) on `cuda` or `cpu` -> the precision to use.
    `purpose` only words the log line."""
    requested = _ALIASES.get(requested, requested)
    if requested not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {requested!r}")
    if requested != "auto":
        chosen = Precision(requested, "set explicitly")
        if requested == "fp16" and device_type == "cpu":
            logger.warning("fp16 on a CPU runs emulated and is far slower than fp32 or bf16")
    elif device_type == "cuda":
        chosen = (Precision("bf16", "the CUDA device supports bf16") if cuda_bf16()
                  else Precision("fp32", "the CUDA device has no bf16 support"))
    else:
        flag = cpu_native_bf16()
        forced = os.environ.get("DR_NATIVE_BF16")
        chosen = (Precision("bf16", f"the CPU has native bf16 matmul ({flag})") if flag
                  else Precision("fp32", f"DR_NATIVE_BF16={forced} overrides the CPU probe") if forced is not None
                  else Precision("fp32", "the CPU has no native bf16 matmul (no amx_bf16 or avx512_bf16 flag)"))
    key = (purpose, requested, device_type)
    if requested == "auto" and key not in _logged:
        _logged.add(key)
        logger.info("%s precision auto -> %s on %s: %s", purpose, chosen.name, device_type, chosen.reason)
    return chosen


@contextlib.contextmanager
def autocast(precision: Precision, device_type: str) -> Iterator[None]:
    """Autocast to `precision` on `device_type` (nothing for fp32)."""
    if precision.dtype is None:
        yield
        return
    with torch.autocast(device_type=device_type, dtype=precision.dtype):
        yield
