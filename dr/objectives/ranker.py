"""Listwise cross-encoder training: find the positive among a query's candidates.

Each group is one query with its positive first and N negatives (BM25 or dense candidates); the loss is
the cross-entropy of a softmax over the group's 1 + N logits (the "localized contrastive estimation" of
Gao et al., ECIR 2021, which monoBERT-style rerankers train with). Logits are per pair, so no passage is
shared across queries.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from dr.losses.contrastive import listwise_cross_entropy
from dr.models.cross_encoder import CrossEncoder
from dr.objectives.base import ObjectiveConfig, Parts, TextObjective, check_positive, param_groups


@dataclass
class RankerObjectiveConfig(ObjectiveConfig):
    """`objective=ranker`: trains the cross-encoder of `ranker=` on the candidates of `negatives=`.
    `rerank_depth`: how many first-stage (BM25) passages per query the cross-encoder reranks when it
    is evaluated during training (the dev set picks the checkpoint). `head_lr`: learning rate of the
    scoring head when it starts untrained (null: the trainer's). Adam moves a weight by about lr per step,
    so at 3e-5 a head initialized with std 0.02 barely changes in a few hundred CPU steps."""

    name: ClassVar[str] = "ranker"
    uses: ClassVar[frozenset[str]] = frozenset({"ranker", "negatives"})
    requires: ClassVar[dict[str, str]] = {"ranker": "the cross-encoder to train, e.g. ranker=minilm"}

    rerank_depth: int = 20
    head_lr: float | None = None

    def __post_init__(self) -> None:
        check_positive(self, "rerank_depth", "head_lr", nullable=("head_lr",))

    def encoder_config(self, cfg: DictConfig):
        return instantiate(cfg.ranker, _convert_="all")

    def make_encoder(self, encoder_cfg) -> CrossEncoder:
        return CrossEncoder(encoder_cfg)

    def build(self, encoder: CrossEncoder, parts: Parts) -> RankerObjective:
        return RankerObjective(encoder, parts.train_set.corpus, self.head_lr, self.rerank_depth)


def group_logits(ranker: CrossEncoder, queries: Sequence[str], passages: Sequence[str], group: int) -> torch.Tensor:
    """(B, G) cross-encoder logits of each query with its `group` passages (group-major, as in batches)."""
    paired = [q for q in queries for _ in range(group)]
    return ranker(ranker.tokenize(paired, passages)).view(len(queries), group)


class RankerObjective(TextObjective):
    """`forward(queries, passages) -> (loss, logs)`. `encoder` is the cross-encoder, so evaluation and
    export find the model being trained there. `corpus`: where `batch` finds the passages' texts."""

    def __init__(self, ranker: CrossEncoder, corpus=None, head_lr: float | None = None,
                 rerank_depth: int = 20) -> None:
        super().__init__()
        self.encoder = ranker
        self.corpus = corpus
        self.head_lr, self.rerank_depth = head_lr, rerank_depth

    def forward(self, queries: Sequence[str], passages: Sequence[str]) -> tuple[torch.Tensor, dict]:
        """B queries and their B*G passages, group-major with the positive first in each group."""
        if len(passages) % len(queries):
            raise ValueError(f"{len(passages)} passages do not split into groups for {len(queries)} queries")
        logits = group_logits(self.encoder, queries, passages, len(passages) // len(queries))  # (B, G)
        loss = listwise_cross_entropy(logits)  # the positive first in each group
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == 0).float().mean()
        return loss, {"loss": float(loss.detach()), "train_acc": float(acc)}

    def param_groups(self, weight_decay: float) -> list[dict]:
        """With `head_lr`, the new scoring head (pooler and classifier) gets its own learning rate."""
        head = {}
        if self.head_lr:
            head = {id(p): {"weight_decay": 0.0, "lr": self.head_lr} for name, p in self.named_parameters()
                    if ".classifier." in name or ".pooler." in name}
        return param_groups(self, weight_decay, head)

    def eval_retriever(self, dense, cache):
        """BM25's top `rerank_depth` reranked by the cross-encoder being trained."""
        from dr.retrievers.bm25 import BM25Retriever
        from dr.retrievers.rerank import RerankRetriever

        return RerankRetriever(BM25Retriever(), self.encoder, depth=self.rerank_depth)

