"""A dev set drawn from the training queries, with an optionally reduced corpus for fast checks.

The reduced corpus keeps every dev positive and fills up to `corpus_size` with BM25's best-ranked
passages for the dev queries (round-robin over ranks), so the dev task stays hard, not a lottery
among random distractors. `corpus_size=None` keeps the whole training corpus.
"""
from __future__ import annotations

import hashlib

import numpy as np

from dr.data.corpus import CorpusStore
from dr.data.errors import ReadPolicy
from dr.data.sources import RetrievalSet
from dr.retrievers.bm25 import BM25Retriever


def dev_set(train_set: RetrievalSet, dev_qids: list[str], corpus_size: int | None,
            name: str = "dev", cache_dir: str | None = None) -> RetrievalSet:
    queries = {q: train_set.queries[q] for q in dev_qids}
    qrels = {q: train_set.qrels[q] for q in dev_qids}
    corpus = train_set.corpus
    if corpus_size is not None and corpus_size < len(corpus):
        corpus = _reduced_corpus(train_set, queries, qrels, corpus_size, cache_dir)
        qrels = {q: {d: g for d, g in j.items() if d in corpus} for q, j in qrels.items()}
    return RetrievalSet(name, corpus, queries, qrels, train_set.rel_level)


def _reduced_corpus(train_set: RetrievalSet, queries: dict[str, str], qrels: dict, size: int,
                    cache_dir: str | None) -> CorpusStore:
    corpus = train_set.corpus
    keep: dict[str, None] = {d: None for q in sorted(qrels) for d, g in qrels[q].items() if g > 0 and d in corpus}
    qids = sorted(queries)
    _, rows = BM25Retriever().search(corpus, [queries[q] for q in qids], depth=size)
    ids = corpus.ids[corpus.active_rows]
    for rank in range(rows.shape[1]):
        for r in rows[:, rank]:
            if len(keep) >= size:
                break
            if r >= 0:
                keep.setdefault(str(ids[r]), None)
    table_rows = np.sort(corpus.rows_of(list(keep)))
    fingerprint = hashlib.sha1((corpus.fingerprint + ",".join(map(str, table_rows))).encode()).hexdigest()[:20]
    sub = corpus.table.take(table_rows)
    records = zip(sub.column("line").to_pylist(), sub.column("id").to_pylist(),
                  sub.column("title").to_pylist(), sub.column("text").to_pylist())
    return CorpusStore.build(records, f"{corpus.source}[dev subset]", fingerprint, ReadPolicy(), cache_dir)
