"""Pooling of token states into one vector per text."""
from __future__ import annotations

from typing import Literal

import torch

PoolingMode = Literal["cls", "mean", "last", "weighted_mean"]
POOLING_MODES = ("cls", "mean", "last", "weighted_mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: PoolingMode) -> torch.Tensor:
    """(B, L, H) token states and (B, L) mask -> (B, H), for right- or left-padded batches.

    - `cls`: the first token (encoders put [CLS] there; right padding).
    - `mean`: the average of the unmasked tokens, as sentence-transformers (sum / max(count, 1e-9)).
    - `last`: the last unmasked token: the EOS that decoder-only embedders append (RepLLaMA, E5-Mistral),
      the only token that has attended to the whole text under a causal mask.
    - `weighted_mean`: tokens weighted by their position among the text's real tokens, 1..n (SGPT,
      Muennighoff 2022): later tokens of a causal model have seen more of the text.

    Hand-worked, one text of 3 real tokens right-padded to 4, states [[1], [2], [4], [9]]:
    mean = 7/3, last = 4, weighted_mean = (1*1 + 2*2 + 3*4) / (1 + 2 + 3) = 17/6.

    >>> h = torch.tensor([[[1.0], [2.0], [4.0], [9.0]]])
    >>> pool(h, torch.tensor([[1, 1, 1, 0]]), "weighted_mean")
    tensor([[2.8333]])
    >>> pool(h, torch.tensor([[0, 1, 1, 1]]), "last")  # left padding: the last position
    tensor([[9.]])
    """
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        summed = (hidden * mask).sum(dim=1)  # (B, H)
        counts = mask.sum(dim=1).clamp(min=1e-9)  # (B, 1)
        return summed / counts
    if mode == "last":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_positions(attention_mask)]
    if mode == "weighted_mean":
        mask = attention_mask.to(hidden.dtype)
        weights = (torch.cumsum(mask, dim=1) * mask).unsqueeze(-1)  # (B, L, 1): 1..n on real tokens, 0 on padding
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    raise ValueError(f"pooling must be one of {', '.join(POOLING_MODES)}, got {mode!r}")


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) mask -> (B,) index of each row's last real token, whatever the padding side.

    >>> last_positions(torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1]]))
    tensor([1, 3, 3])
    """
    length = attention_mask.shape[1]
    positions = torch.arange(length, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), positions, -1).amax(dim=1).clamp(min=0)
