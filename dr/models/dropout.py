"""Dropout masks from fewer random draws, for the CPU training step.

`torch.nn.functional.dropout` on CPU draws one Bernoulli sample per element (`aten::bernoulli_`): in a
training step of all-MiniLM-L6-v2 at length 256 that was about a fifth of all operator time, most of it the
attention-probability dropout over (batch, heads, L, L). Here the mask comes from 16 random bits per element,
four to each 64-bit draw of torch's generator (`random_` over the full int64 range), compared against a
threshold: the element is dropped when its 16 bits, read as a signed integer, fall below
`round(p * 65536) - 32768`. So the drop probability is `round(p * 65536) / 65536` (0.1 -> 0.100006), and kept
elements are to be scaled by `keep_scale(p)`, the inverse of the resulting keep probability, so the
expectation is exact, as in `F.dropout`. The draws come from torch's default generator of the tensor's device, so `torch.manual_seed`
and a resumed generator state reproduce the masks.
"""
from __future__ import annotations

import math

import torch

__all__ = ["DROP_BITS", "drop_mask", "keep_scale"]

DROP_BITS = 16
_LEVELS = 1 << DROP_BITS  # 65,536 equally likely values of the 16 bits


def _threshold(p: float) -> int:
    """Drop when the signed 16-bit value is below this: round(p * 65536) of the 65,536 values are."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return round(p * _LEVELS) - _LEVELS // 2


def keep_scale(p: float) -> float:
    """1 / P(keep) for the quantized drop probability: 0.1 -> 65536 / 58982 = 1.1111..."""
    dropped = _threshold(p) + _LEVELS // 2
    return _LEVELS / (_LEVELS - dropped)


def drop_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool tensor of `shape`, True = keep, each element kept with probability 1 - round(p * 65536) / 65536."""
    count = math.prod(shape)
    draws = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)
    return draws.view(torch.int16)[:count].view(shape) >= _threshold(p)
