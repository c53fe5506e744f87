"""Listwise cross-encoder training: find the positive among a query's candidates.

Each group is one query with its positive first and N negatives (BM25 or dense candidates); the loss is
the cross-entropy of a softmax over the group's 1 + N logits (the "localized contrastive estimation" of
Gao et al., ECIR 2021, which monoBERT-style rerankers train with). Logits are per pair, so no passage is
shared across queries.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dr.losses.contrastive import listwise_cross_entropy
from dr.models.cross_encoder import CrossEncoder


@dataclass
class RankerObjectiveConfig:
    """`rerank_depth`: how many first-stage (BM25) passages per query the cross-encoder reranks when it
    is evaluated during training (the dev set picks the checkpoint). `head_lr`: learning rate of the
    scoring head when it starts untrained (null: the trainer's). Adam moves a weight by about lr per step,
    so at 3e-5 a head initialized with std 0.02 barely changes in a few hundred CPU steps."""

    rerank_depth: int = 20
    head_lr: float | None = None

    def __post_init__(self) -> None:
        if self.rerank_depth <= 0:
            raise ValueError(f"objective.rerank_depth must be > 0, got {self.rerank_depth}")
        if self.head_lr is not None and self.head_lr <= 0:
            raise ValueError(f"objective.head_lr must be > 0 or null, got {self.head_lr}")


def group_logits(ranker: CrossEncoder, queries: Sequence[str], passages: Sequence[str], group: int) -> torch.Tensor:
    """(B, G) cross-encoder logits of each query with its `group` passages (group-major, as in batches)."""
    paired = [q for q in queries for _ in range(group)]
    return ranker(ranker.tokenize(paired, passages)).view(len(queries), group)


class RankerObjective(nn.Module):
    """`forward(queries, passages) -> (loss, logs)`; the trainer calls it like the contrastive objective.
    `encoder` is the cross-encoder, so evaluation and export find the model being trained there."""

    def __init__(self, ranker: CrossEncoder) -> None:
        super().__init__()
        self.encoder = ranker

    def forward(self, queries: Sequence[str], passages: Sequence[str]) -> tuple[torch.Tensor, dict]:
        """B queries and their B*G passages, group-major with the positive first in each group."""
        if len(passages) % len(queries):
            raise ValueError(f"{len(passages)} passages do not split into groups for {len(queries)} queries")
        logits = group_logits(self.encoder, queries, passages, len(passages) // len(queries))  # (B, G)
        loss = listwise_cross_entropy(logits)  # the positive first in each group
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == 0).float().mean()
        return loss, {"loss": float(loss.detach()), "train_acc": float(acc)}
