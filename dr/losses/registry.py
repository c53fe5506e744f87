"""Loss choice as a small dataclass so configs pick a loss by name with its options."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from dr.losses.contrastive import pairwise_hinge, ranknet, softmax_cross_entropy


@dataclass
class LossConfig:
    """`name`: `cross_entropy` (in-batch + hard negatives softmax), `hinge` (with `margin`) or `ranknet`."""

    name: Literal["cross_entropy", "hinge", "ranknet"] = "cross_entropy"
    margin: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in ("cross_entropy", "hinge", "ranknet"):
            raise ValueError(f"loss.name must be cross_entropy, hinge or ranknet, got {self.name!r}")

    def __call__(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.name == "cross_entropy":
            return softmax_cross_entropy(scores, targets)
        if self.name == "hinge":
            return pairwise_hinge(scores, targets, self.margin)
        return ranknet(scores, targets)
