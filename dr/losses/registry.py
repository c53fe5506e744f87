"""Loss choice by name: `LOSSES` maps each name to a pure loss over (scores, targets, candidates), and
`LossConfig` picks one with its options, so configs say `loss.name=hinge loss.margin=0.5`.

A new in-batch loss is one entry: `register_loss("name", fn)` with `fn(config, scores, targets, candidates)`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dr.losses.contrastive import (hard_negative_cross_entropy, own_group_mask, pairwise_hinge, ranknet,
                                   softmax_cross_entropy)

LossFn = Callable[["LossConfig", torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]

LOSSES: dict[str, LossFn] = {
    "cross_entropy": lambda cfg, scores, targets, cand: softmax_cross_entropy(scores, targets, cand),
    "hinge": lambda cfg, scores, targets, cand: pairwise_hinge(scores, targets, cfg.margin, cand),
    "ranknet": lambda cfg, scores, targets, cand: ranknet(scores, targets, cand),
    "hard_negative": lambda cfg, scores, targets, cand: hard_negative_cross_entropy(
        scores, targets, cfg.beta, cfg.tau_plus, cand),
}


def register_loss(name: str, fn: LossFn) -> None:
    """Make `loss.name=NAME` choose `fn`; a name already taken is an error."""
    if name in LOSSES:
        raise ValueError(f"loss {name!r} is already registered")
    LOSSES[name] = fn


@dataclass
class LossConfig:
    """`name`: a key of `LOSSES`: `cross_entropy` (in-batch + hard negatives softmax), `hinge` (with
    `margin`), `ranknet`, `hard_negative` (HCL, with `beta` and `tau_plus`), or one added with `register_loss`."""

    name: str = "cross_entropy"
    margin: float = 1.0
    in_batch: bool = True  # false: each query sees only its own group (ANCE's loss over [pos, hard neg])
    beta: float = 0.0  # hard_negative: concentration on hard negatives (on the temperature-scaled scores)
    tau_plus: float = 0.0  # hard_negative: prior share of false negatives among the negatives, in [0, 1)
    # Matryoshka (dr.losses.matryoshka): the loss summed over these embedding prefixes (null: full embeddings
    # only), each times its weight (null: all 1)
    matryoshka_dims: list[int] | None = None
    matryoshka_weights: list[float] | None = None

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"loss.name must be one of {', '.join(sorted(LOSSES))}, got {self.name!r}")
        if self.beta < 0 or not 0 <= self.tau_plus < 1:
            raise ValueError(f"loss.beta must be >= 0 and loss.tau_plus in [0, 1), got {self.beta}, {self.tau_plus}")
        if self.matryoshka_dims is not None:
            dims = [int(d) for d in self.matryoshka_dims]
            if not dims or min(dims) <= 0 or len(set(dims)) != len(dims):
                raise ValueError(f"loss.matryoshka_dims must be distinct positive sizes, got {self.matryoshka_dims}")
            weights = [1.0] * len(dims) if self.matryoshka_weights is None else list(self.matryoshka_weights)
            if len(weights) != len(dims) or min(weights) < 0:
                raise ValueError(f"loss.matryoshka_weights needs one weight >= 0 per dimension ({len(dims)}), "
                                 f"got {self.matryoshka_weights}")
            self.matryoshka_dims, self.matryoshka_weights = dims, [float(w) for w in weights]
        elif self.matryoshka_weights is not None:
            raise ValueError("loss.matryoshka_weights is set but loss.matryoshka_dims is not")

    def __call__(self, scores: torch.Tensor, targets: torch.Tensor, group: int = 1,
                 exclude: torch.Tensor | None = None) -> torch.Tensor:
        """scores (B, P), targets (B,) positive columns, `group` passages per query (positive first);
        `exclude` (B, P) bool: columns that are not negatives of that query (e.g. its own positive met again
        in a cross-batch memory)."""
        cand = None if self.in_batch else own_group_mask(targets, group, scores.shape[1])
        if exclude is not None:
            cand = ~exclude if cand is None else cand & ~exclude
        return LOSSES[self.name](self, scores, targets, cand)
