"""Rerank a first-stage run with a cross-encoder (monoBERT style): the top `depth` passages of each query
get the cross-encoder's logits; the rest keep their first-stage order below them, so recall at deeper
cutoffs is the first stage's."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from dr.data.sources import RetrievalSet
from dr.models.cross_encoder import CrossEncoder
from dr.retrievers import Retriever
from dr.types import Run

logger = logging.getLogger(__name__)


@dataclass
class RerankRetriever:
    """`encoder`: the cross-encoder (named like the dense retriever's field so that training swaps in the
    model it trains)."""

    first_stage: Retriever
    encoder: CrossEncoder
    depth: int = 100
    name: str = "rerank"

    def __post_init__(self) -> None:
        if self.depth <= 0:
            raise ValueError(f"rerank depth must be > 0, got {self.depth}")

    def retrieve(self, eval_set: RetrievalSet, depth: int) -> Run:
        first = self.first_stage.retrieve(eval_set, max(depth, self.depth))
        ranked = {q: sorted(docs, key=docs.get, reverse=True) for q, docs in first.items()}
        run: Run = {q: {} for q in ranked}
        run.update(score_pairs(self.encoder, eval_set, {q: docs[: self.depth] for q, docs in ranked.items()}))
        for q, docs in ranked.items():
            floor = min(run[q].values(), default=0.0)
            for i, d in enumerate(docs[self.depth : depth]):  # below every reranked passage, same order
                run[q][d] = floor - 1.0 - i
        return run


def score_pairs(ranker: CrossEncoder, scored_set: RetrievalSet, pairs: dict[str, list[str]]) -> Run:
    """`{qid: {pid: logit}}` for every (qid, pid) in `pairs`, scored in one length-sorted pass."""
    flat = [(q, d) for q, docs in pairs.items() for d in docs]
    corpus = scored_set.corpus
    texts = corpus.texts(corpus.rows_of([d for _, d in flat]))
    logits = ranker.score([scored_set.queries[q] for q, _ in flat], texts, desc=scored_set.name)
    out: Run = {}
    for (q, d), s in zip(flat, logits.tolist()):
        out.setdefault(q, {})[d] = s
    return out
