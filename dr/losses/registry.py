"""Loss choice as a small dataclass so configs pick a loss by name with its options."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from dr.losses.contrastive import own_group_mask, pairwise_hinge, ranknet, softmax_cross_entropy


@dataclass
class LossConfig:
    """`name`: `cross_entropy` (in-batch + hard negatives softmax), `hinge` (with `margin`) or `ranknet`."""

    name: Literal["cross_entropy", "hinge", "ranknet"] = "cross_entropy"
    margin: float = 1.0
    in_batch: bool = True  # false: each query sees only its own group (ANCE's loss over [pos, hard neg])

    def __post_init__(self) -> None:
        if self.name not in ("cross_entropy", "hinge", "ranknet"):
            raise ValueError(f"loss.name must be cross_entropy, hinge or ranknet, got {self.name!r}")

    def __call__(self, scores: torch.Tensor, targets: torch.Tensor, group: int = 1) -> torch.Tensor:
        """scores (B, P), targets (B,) positive columns, `group` passages per query (positive first)."""
        cand = None if self.in_batch else own_group_mask(targets, group, scores.shape[1])
        if self.name == "cross_entropy":
            return softmax_cross_entropy(scores, targets, cand)
        if self.name == "hinge":
            return pairwise_hinge(scores, targets, self.margin, cand)
        return ranknet(scores, targets, cand)
