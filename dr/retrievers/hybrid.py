"""Hybrid retrieval: BM25 and a dense model each retrieve their top `k`; the union is fused per query
(`dr.retrievers.fusion`: z-score by default, min-max or reciprocal rank fusion; weights BM25, dense).

The fused run holds at most 2k passages a query, so recall at a cutoff above k counts only that union.
Under several processes it runs on the first one (the dense half then encodes the whole corpus there).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dr.data.sources import RetrievalSet
from dr.encoding.cache import EmbeddingCache
from dr.models.dual_encoder import DualEncoder
from dr.retrievers.bm25 import BM25Retriever
from dr.retrievers.dense import DenseRetriever
from dr.retrievers.fusion import FUSIONS, Fusion, fuse
from dr.types import Run


@dataclass
class HybridRetriever:
    """`dense`: the dense retriever's settings, given the encoder and cache here (a Hydra partial)."""

    encoder: DualEncoder
    bm25: BM25Retriever
    dense: Callable[..., DenseRetriever]
    cache: EmbeddingCache | None = None
    k: int = 100
    fusion: Fusion = "zscore"
    weights: Sequence[float] = (1.0, 1.0)
    rrf_k: int = 60
    name: str = "hybrid"
    sharded: bool = False
    _dense: DenseRetriever = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.k <= 0:
            raise ValueError(f"retriever.k must be > 0, got {self.k}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"retriever.fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if len(self.weights) != 2:
            raise ValueError(f"retriever.weights: two weights (BM25, dense), got {list(self.weights)}")
        self._dense = self.dense(encoder=self.encoder, cache=self.cache)

    def retrieve(self, eval_set: RetrievalSet, depth: int) -> Run:
        runs = [self.bm25.retrieve(eval_set, self.k), self._dense.retrieve(eval_set, self.k)]
        return fuse(runs, list(self.weights), self.fusion, self.rrf_k, depth)
