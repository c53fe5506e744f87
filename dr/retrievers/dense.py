"""Dense retrieval: encode the corpus (cached for an unchanged model), build a faiss index, search."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from dr.data.corpus import CorpusStore
from dr.data.sources import RetrievalSet
from dr.eval.cache import EmbeddingCache, cache_key, weights_fingerprint
from dr.eval.runs import Run, run_from_search
from dr.index import IndexConfig, build_index
from dr.models.dual_encoder import DualEncoder

logger = logging.getLogger(__name__)


@dataclass
class EncodeStats:
    """Seconds spent and passages encoded by the last `retrieve` calls (cache hits encode none)."""

    passages: int = 0
    seconds: float = 0.0
    cache_hits: int = 0

    @property
    def passages_per_s(self) -> float:
        return self.passages / self.seconds if self.seconds else float("nan")


@dataclass
class DenseRetriever:
    encoder: DualEncoder
    index: IndexConfig = field(default_factory=IndexConfig)
    cache: EmbeddingCache | None = None
    chunk_size: int = 100_000
    name: str = "dense"
    stats: EncodeStats = field(default_factory=EncodeStats)

    def corpus_embeddings(self, corpus: CorpusStore) -> np.ndarray:
        """(len(corpus), H) float32 embeddings in `corpus.active_rows` order."""
        key = None
        if self.cache is not None:
            e, c = self.encoder, self.encoder.config
            key = cache_key(
                weights_fingerprint(e.passage_model), e.pooling, e.score_kind, str(c.passage_max_length),
                corpus.fingerprint, str(len(corpus)),
            )
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                return np.asarray(hit)
        start = time.perf_counter()
        rows = corpus.active_rows
        emb = np.empty((len(rows), self.encoder.dim), np.float32)  # filled chunk by chunk: one copy in RAM
        for i in range(0, len(rows), self.chunk_size):
            chunk = rows[i : i + self.chunk_size]
            emb[i : i + len(chunk)] = self.encoder.encode_passages(corpus.texts(chunk), desc=f"{corpus.source}")
        elapsed = time.perf_counter() - start
        self.stats.passages += len(rows)
        self.stats.seconds += elapsed
        logger.info("encoded %d passages in %.1fs (%.1f/s)", len(rows), elapsed, len(rows) / max(elapsed, 1e-9))
        if self.cache is not None and key is not None:
            self.cache.put(key, emb)
        return emb

    def retrieve(self, eval_set: RetrievalSet, depth: int) -> Run:
        corpus = eval_set.corpus
        index = build_index(self.corpus_embeddings(corpus), self.index)
        qids = list(eval_set.queries)
        q = self.encoder.encode_queries([eval_set.queries[x] for x in qids], desc=f"{eval_set.name} queries")
        scores, rows = index.search(q, depth)
        docids = corpus.ids[corpus.active_rows]
        return run_from_search(qids, scores, rows, docids)
