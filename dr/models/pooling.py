"""Pooling of token states into one vector per text."""
from __future__ import annotations

from typing import Literal

import torch

PoolingMode = Literal["cls", "mean"]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: PoolingMode) -> torch.Tensor:
    """(B, L, H) token states and (B, L) mask -> (B, H).

    `mean` averages the unmasked tokens as sentence-transformers does (sum / max(count, 1e-9));
    `cls` takes the first token.
    """
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        summed = (hidden * mask).sum(dim=1)  # (B, H)
        counts = mask.sum(dim=1).clamp(min=1e-9)  # (B, 1)
        return summed / counts
    raise ValueError(f"pooling must be 'cls' or 'mean', got {mode!r}")
