"""Dense retrieval: encode the corpus (cached for an unchanged model), index it with faiss, search.

Sharded: under W processes each encodes and searches its 1/W of the corpus (`dr.encoding.sharded`) and
the first process gets the merged run, equal to one process's; the others return an empty run.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dr.data.corpus import CorpusStore
from dr.data.runs import run_from_search
from dr.data.sources import RetrievalSet
from dr.dist import all_gather_object, world
from dr.encoding.cache import EmbeddingCache, ShardEmbeddings
from dr.encoding.sharded import EncodeStats, corpus_matrix, encode_corpus, encode_texts, search
from dr.index import IndexConfig, build_block_index
from dr.models.dual_encoder import DualEncoder
from dr.types import Run

logger = logging.getLogger(__name__)


@dataclass
class DenseRetriever:
    """`chunk_size`: passages read from the corpus and encoded per group (bounds memory)."""

    encoder: DualEncoder
    index: IndexConfig = field(default_factory=IndexConfig)
    cache: EmbeddingCache | None = None
    chunk_size: int = 100_000
    name: str = "dense"
    stats: EncodeStats = field(default_factory=EncodeStats)
    sharded: bool = True  # every process takes part in `retrieve` (the evaluator reads this)

    def corpus_embeddings(self, corpus: CorpusStore) -> ShardEmbeddings:
        """This process's shard of the corpus embeddings (all of them in one process)."""
        return encode_corpus(self.encoder, corpus, self.cache, self.stats, self.chunk_size)

    def corpus_matrix(self, corpus: CorpusStore) -> np.ndarray:
        """(len(corpus), H) float32 in `corpus.active_rows` order, on every process."""
        return corpus_matrix(self.encoder, corpus, self.cache, self.stats)

    def search(self, corpus: CorpusStore, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Global top-`depth` (scores, corpus table rows; -1 where fewer) on every process."""
        return search(self.corpus_embeddings(corpus), queries, depth, self.index)

    def index_writer(self, corpus: CorpusStore, config: IndexConfig) -> Callable[[Path], None] | None:
        """Collective. On the first process, a function that writes the faiss index (`config.factory`, on
        the CPU) of `corpus` under the current passage tower into a directory: `index.faiss` (plain
        `faiss.read_index` loads it), `index.docids` (the docid of each faiss position, one per line) and
        `index.json`; None on the others. Other processes' shards are gathered to the first."""
        shard = self.corpus_embeddings(corpus)
        rank, size = world()
        parts = all_gather_object((shard.rows(), shard.matrix(shard.rows()))) if size > 1 else None
        if rank != 0:
            return None
        blocks = (lambda: iter(parts)) if parts is not None else shard.blocks
        cpu = dataclasses.replace(config, device="cpu")
        index = build_block_index(blocks, len(corpus), cpu)
        meta = {"factory": cpu.factory, "metric": cpu.metric, "dim": self.encoder.dim, "passages": len(index.ids),
                "score": self.encoder.score_kind, "corpus": corpus.source, "corpus_fingerprint": corpus.fingerprint}

        def write(directory: Path) -> None:
            index.index.save(directory / "index.faiss")
            (directory / "index.docids").write_text("\n".join(corpus.ids[index.ids].tolist()) + "\n")
            (directory / "index.json").write_text(json.dumps(meta, indent=2) + "\n")
        return write

    def retrieve(self, eval_set: RetrievalSet, depth: int) -> Run:
        qids = list(eval_set.queries)
        shard = self.corpus_embeddings(eval_set.corpus)
        q = encode_texts(self.encoder, "query", [eval_set.queries[x] for x in qids], f"{eval_set.name} queries")
        scores, rows = search(shard, q, depth, self.index)
        if world()[0] != 0:
            return {}
        return run_from_search(qids, scores, rows, eval_set.corpus.ids)
