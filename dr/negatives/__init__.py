"""Sources of hard negatives for training groups: files, BM25, and (offline) a dense model via dr.mine."""
from __future__ import annotations

from typing import Protocol

from dr.data.sources import RetrievalSet
from dr.types import Negatives


class NegativesSource(Protocol):
    def negatives(self, train_set: RetrievalSet, qids: list[str]) -> Negatives:
        """`{qid: [docid, ...]}` for the training queries `qids` (positives never included)."""
        ...
