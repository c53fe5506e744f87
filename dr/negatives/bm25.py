"""BM25 hard negatives (DPR; Tevatron's baseline): top-`depth` by BM25, positives removed, a rank window."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from dr.data.sources import RetrievalSet
from dr.mining.select import select_negatives
from dr.retrievers.bm25 import BM25Retriever
from dr.types import Negatives

logger = logging.getLogger(__name__)


@dataclass
class BM25Negatives:
    depth: int = 100
    window: tuple[int, int] = (0, 100)
    per_query: int = 30
    sampling: Literal["uniform", "top"] = "uniform"
    seed: int = 0
    bm25: BM25Retriever = field(default_factory=BM25Retriever)

    def negatives(self, train_set: RetrievalSet, qids: list[str]) -> Negatives:
        subset = RetrievalSet(train_set.name, train_set.corpus, {q: train_set.queries[q] for q in qids},
                              {q: train_set.qrels[q] for q in qids}, train_set.rel_level)
        run = self.bm25.retrieve(subset, self.depth)
        negs = select_negatives(run, subset.qrels, tuple(self.window), self.per_query,
                                np.random.default_rng(self.seed), self.sampling)
        logger.info("bm25 negatives: %d queries, %.1f per query", len(negs),
                    float(np.mean([len(v) for v in negs.values()])) if negs else 0.0)
        return negs
