"""Retrieval from a product-quantized index (JPQ's, or a plain OPQ+PQ one): queries are encoded by the
query tower and searched in the compressed index.

The index knows the corpus it was built on (its docids and corpus fingerprint): on that corpus its fixed
codes are searched as they are. Any other corpus is encoded with the passage tower (cached like the dense
retriever's) and added to an empty copy of the index, i.e. coded with its rotation and its (trained)
centroids, which is what a user does with the exported file and plain faiss.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from dr.data.runs import run_from_search
from dr.data.sources import RetrievalSet
from dr.encoding.cache import EmbeddingCache
from dr.index import IndexConfig
from dr.index.faiss_index import place_index
from dr.index.pq import ProductQuantizer, load_pq_index, recode
from dr.models.dual_encoder import DualEncoder
from dr.retrievers.dense import DenseRetriever
from dr.types import Run

logger = logging.getLogger(__name__)


@dataclass
class PQRetriever:
    """`index_path`: an exported index file (with its .docids/.json beside it); or `quantizer`: the live
    one of a JPQ run (its current centroids)."""

    encoder: DualEncoder
    index_path: str | None = None
    cache: EmbeddingCache | None = None
    quantizer: ProductQuantizer | None = None
    search: IndexConfig = field(default_factory=lambda: IndexConfig(factory="IVF1,PQ", device="auto"))
    name: str = "pq"

    def __post_init__(self) -> None:
        if (self.index_path is None) == (self.quantizer is None):
            raise ValueError("PQRetriever needs exactly one of index_path (an exported index) or quantizer")

    def _index(self) -> tuple[object, list[str], str]:
        if self.quantizer is not None:
            return self.quantizer.sync(), self.quantizer.docids, self.quantizer.corpus_fingerprint
        return load_pq_index(self.index_path)

    def index_for(self, eval_set: RetrievalSet) -> tuple[object, np.ndarray]:
        """The index to search for `eval_set`'s corpus and its row -> docid array."""
        index, docids, fingerprint = self._index()
        corpus = eval_set.corpus
        if corpus.fingerprint == fingerprint:
            return index, np.asarray(docids, dtype=object)
        emb = DenseRetriever(self.encoder, cache=self.cache).corpus_matrix(corpus)
        coded = recode(index, emb)
        logger.info("coded %d passages of %s with the index's rotation and centroids", coded.ntotal, corpus.source)
        return coded, corpus.ids[corpus.active_rows]

    def retrieve(self, eval_set: RetrievalSet, depth: int) -> Run:
        index, docids = self.index_for(eval_set)
        qids = list(eval_set.queries)
        q = self.encoder.encode_queries([eval_set.queries[x] for x in qids], desc=f"{eval_set.name} queries")
        scores, rows = place_index(index, self.search).search(q, depth)
        return run_from_search(qids, scores, rows, docids)
