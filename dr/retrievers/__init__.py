"""First-stage retrievers: dense (encoder + faiss), BM25 (bm25s), rerank, PQ. Each maps a set to a run."""
from __future__ import annotations

from typing import Protocol

from dr.data.sources import RetrievalSet
from dr.dist import local_only, world
from dr.types import Run


class Retriever(Protocol):
    """`sharded`: whether every process takes part in `retrieve` (a dense retriever encodes and searches
    one shard each, and the first process gets the merged run); a retriever without it runs on the first
    process alone."""

    name: str

    def retrieve(self, eval_set: RetrievalSet, depth: int) -> Run:
        """Top-`depth` passages of `eval_set.corpus` for each query of `eval_set`."""
        ...


def retrieve_run(retriever: Retriever, eval_set: RetrievalSet, depth: int) -> Run:
    """The run, on the first process (the others get {}): every process takes part for a sharded
    retriever, only the first (seeing a world of one) for any other."""
    rank, size = world()
    if size == 1 or getattr(retriever, "sharded", False):
        run = retriever.retrieve(eval_set, depth)
        return run if rank == 0 else {}
    if rank != 0:
        return {}
    with local_only():
        return retriever.retrieve(eval_set, depth)
