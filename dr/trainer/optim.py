"""The optimizer: AdamW, fused (one kernel per update over all parameters) where torch supports it.

sentence-transformers' trainer uses the fused AdamW by default; dr's steps measured faster with it
(docs/BENCHMARKS.md). torch >= 2.4 fuses AdamW on CPUs and CUDA GPUs; elsewhere (older torch, other
devices) `fused: null` falls back to the multi-tensor (`foreach`) implementation with a log line.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

logger = logging.getLogger(__name__)


def adamw(params: Iterable, lr: float, weight_decay: float = 0.01, betas: tuple[float, float] = (0.9, 0.999),
          eps: float = 1e-8, fused: bool | None = None) -> torch.optim.AdamW:
    """`torch.optim.AdamW` over `params` (tensors or parameter groups). `fused`: true requires the fused
    kernel, false never uses it, null (default) uses it where this torch supports the parameters' device."""
    params = list(params)
    kw = {"lr": lr, "weight_decay": weight_decay, "betas": tuple(betas), "eps": eps}
    if fused is None:
        try:
            return torch.optim.AdamW(params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError) as e:  # torch raises these when fused is unsupported
            logger.info("fused AdamW is not available here (%s); using the foreach implementation", e)
            return torch.optim.AdamW(params, **kw)
    return torch.optim.AdamW(params, fused=fused, **kw)
