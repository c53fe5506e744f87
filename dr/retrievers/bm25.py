"""BM25 with bm25s (Lù, 2024): an in-memory sparse index over the corpus store.

The same index gives BM25 negatives for training (top-k minus positives) and the BM25 baseline.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import bm25s
import numpy as np

from dr.data.corpus import CorpusStore
from dr.data.sources import RetrievalSet
from dr.eval.runs import Run, run_from_search

logger = logging.getLogger(__name__)


@dataclass
class BM25Retriever:
    """`method` is a bm25s variant (`lucene` matches Anserini/Pyserini's scoring); English stopwords and
    Porter-style stemming (PyStemmer) as in Anserini's default analyzer; `stemmer: null` turns it off."""

    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stopwords: str | None = "en"
    stemmer: str | None = "english"
    name: str = "bm25"
    _indexes: dict[str, bm25s.BM25] = field(default_factory=dict, repr=False)

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        stem = None
        if self.stemmer:
            import Stemmer

            stem = Stemmer.Stemmer(self.stemmer).stemWords
        return bm25s.tokenize(texts, stopwords=self.stopwords, stemmer=stem, return_ids=False, show_progress=False)

    def index_for(self, corpus: CorpusStore) -> bm25s.BM25:
        if corpus.fingerprint not in self._indexes:
            texts = corpus.texts(corpus.active_rows)
            tokens = self._tokenize(texts)
            model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
            model.index(tokens, show_progress=False)
            self._indexes[corpus.fingerprint] = model
            logger.info("bm25 index over %d passages", len(texts))
        return self._indexes[corpus.fingerprint]

    def search(self, corpus: CorpusStore, queries: list[str], depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) scores and positions in `corpus.active_rows` order."""
        model = self.index_for(corpus)
        k = min(depth, len(corpus))
        tokens = self._tokenize(queries)
        rows, scores = model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        rows = np.where(scores > 0, rows, -1)  # no query term in the passage: not retrieved
        return scores.astype(np.float32), rows.astype(np.int64)

    def retrieve(self, eval_set: RetrievalSet, depth: int) -> Run:
        corpus = eval_set.corpus
        qids = list(eval_set.queries)
        scores, rows = self.search(corpus, [eval_set.queries[q] for q in qids], depth)
        return run_from_search(qids, scores, rows, corpus.ids[corpus.active_rows])
