"""First-stage retrievers: dense (encoder + faiss) and BM25 (bm25s). Both map a set to a run."""
from __future__ import annotations

from typing import Protocol

from dr.data.sources import RetrievalSet
from dr.eval.runs import Run


class Retriever(Protocol):
    name: str

    def retrieve(self, eval_set: RetrievalSet, depth: int) -> Run:
        """Top-`depth` passages of `eval_set.corpus` for each query of `eval_set`."""
        ...
