"""BM25 with bm25s (Lù, 2024): a sparse index over the corpus store, built once and memory-mapped.

The same index gives BM25 negatives for training (top-k minus positives) and the BM25 baseline. It is saved
under the dr cache (`bm25/<key>`), keyed by the corpus content and everything that changes the index (k1,
b, method, stopwords, stemmer, bm25s version): the first process to need it builds it (a file lock makes the
others wait, see `dr.data.prepared`), and every process and later run loads it memory-mapped.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bm25s
import numpy as np

from dr.data.corpus import CorpusStore
from dr.data.prepared import cache_root, prepare_once, text_key
from dr.data.runs import run_from_search
from dr.data.sources import RetrievalSet
from dr.types import Run

logger = logging.getLogger(__name__)
_INDEX_VERSION = 1  # bump when what a saved index holds changes


@dataclass
class BM25Retriever:
    """`method` is a bm25s variant (`lucene` matches Anserini/Pyserini's scoring); English stopwords and
    Porter-style stemming (PyStemmer) as in Anserini's default analyzer; `stemmer: null` turns it off.

    `threads`: retrieval threads (null: every core this process may use); `chunk_passages`: passages
    tokenized at once while indexing (bounds the token lists held as Python objects); `cache_dir`: where
    indexes are saved (null: `$DR_CACHE`).
    """

    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stopwords: str | None = "en"
    stemmer: str | None = "english"
    name: str = "bm25"
    threads: int | None = None
    chunk_passages: int = 100_000
    cache_dir: str | None = None
    _indexes: dict[str, bm25s.BM25] = field(default_factory=dict, repr=False)

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        stem = None
        if self.stemmer:
            import Stemmer

            stem = Stemmer.Stemmer(self.stemmer).stemWords
        return bm25s.tokenize(texts, stopwords=self.stopwords, stemmer=stem, return_ids=False, show_progress=False)

    def index_key(self, corpus: CorpusStore) -> str:
        """The saved index's name: the corpus content and every setting that changes the index."""
        return text_key("bm25", _INDEX_VERSION, corpus.fingerprint, self.k1, self.b, self.method, self.stopwords,
                        self.stemmer, bm25s.__version__)

    def index_for(self, corpus: CorpusStore) -> bm25s.BM25:
        if corpus.fingerprint not in self._indexes:
            directory, built = prepare_once(cache_root(self.cache_dir) / "bm25" / self.index_key(corpus),
                                            lambda tmp: self._build(corpus, tmp), f"bm25 index of {corpus.source}")
            if not built:
                logger.info("bm25 index of %s loaded from %s", corpus.source, directory)
            self._indexes[corpus.fingerprint] = bm25s.BM25.load(directory, mmap=True, show_progress=False)
        return self._indexes[corpus.fingerprint]

    def _build(self, corpus: CorpusStore, directory: Path) -> None:
        """Tokenize `chunk_passages` at a time into one flat int32 array, index, save into `directory`."""
        vocab: dict[str, int] = {}
        token_ids: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        rows = corpus.active_rows
        for start in range(0, len(rows), self.chunk_passages):
            tokens = self._tokenize(corpus.texts(rows[start : start + self.chunk_passages]))
            ids = [vocab.setdefault(t, len(vocab)) for doc in tokens for t in doc]
            token_ids.append(np.array(ids, dtype=np.int32))
            lengths.append(np.array([len(doc) for doc in tokens], dtype=np.int64))
        flat, doc_lengths = np.concatenate(token_ids), np.concatenate(lengths)
        del token_ids
        model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        if self.method in _CHUNKED_METHODS:
            # the same matrix bm25s builds, a chunk of passages at a time (bm25s holds three copies of
            # every (passage, term) entry plus scipy's conversion: 18 GB at 8.8M passages)
            data, indices, indptr = bm25_csc(flat, doc_lengths, len(vocab), self.k1, self.b, self.method)
            model.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": len(doc_lengths)}
            model.nonoccurrence_array = None
        else:  # bm25l / bm25+ also need a non-occurrence array: bm25s's builder, from ids
            model.scores = model.build_index_from_ids(list(range(len(vocab))), _Documents(flat, doc_lengths),
                                                      show_progress=False)
        del flat
        if "" not in vocab:
            vocab[""] = max(vocab.values(), default=-1) + 1
        model.vocab_dict = vocab
        model.unique_token_ids_set = set(vocab.values())
        model.save(str(directory), show_progress=False)
        logger.info("bm25 index built over %d passages (%d terms) at %s", len(rows), len(vocab), directory)

    def search(self, corpus: CorpusStore, queries: list[str], depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) scores and positions in `corpus.active_rows` order."""
        model = self.index_for(corpus)
        k = min(depth, len(corpus))
        tokens = self._tokenize(queries)
        rows, scores = model.retrieve(tokens, k=k, show_progress=False, n_threads=self.threads or _cores())
        rows = np.where(scores > 0, rows, -1)  # no query term in the passage: not retrieved
        return scores.astype(np.float32), rows.astype(np.int64)

    def score_matrix(self, corpus: CorpusStore, queries: list[str]) -> np.ndarray:
        """(Q, len(corpus)) BM25 score of every query against every passage, in `corpus.active_rows` order
        (0 where no query term occurs; a query of stopwords only scores 0 everywhere)."""
        model = self.index_for(corpus)
        out = np.zeros((len(queries), len(corpus)), np.float32)
        for i, tokens in enumerate(self._tokenize(queries)):
            if tokens:
                out[i] = model.get_scores(tokens)
        return out

    def retrieve(self, eval_set: RetrievalSet, depth: int) -> Run:
        corpus = eval_set.corpus
        qids = list(eval_set.queries)
        scores, rows = self.search(corpus, [eval_set.queries[q] for q in qids], depth)
        return run_from_search(qids, scores, rows, corpus.ids[corpus.active_rows])


_CHUNKED_METHODS = ("robertson", "lucene", "atire")  # a score that is idf(term) x tfc(tf, doc length) only


def bm25_csc(flat: np.ndarray, lengths: np.ndarray, n_vocab: int, k1: float, b: float, method: str,
             chunk_docs: int = 500_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """bm25s's (passages x terms) score matrix in CSC form (`data`, `indices` = passage, `indptr` by term),
    built `chunk_docs` passages at a time: one pass counts document frequencies, a second scores each
    chunk's (passage, term) pairs and places them at their final positions. Peak memory is the output
    (8 bytes per pair) plus one chunk's pairs.

    `flat`: every passage's token ids, concatenated; `lengths`: tokens per passage. The arithmetic is
    bm25s's own (its idf and tf functions, the same dtypes and order of operations), so the matrix equals
    `BM25.build_index_from_ids`'s bit for bit (tested).
    """
    from bm25s.scoring import _build_idf_array, _select_idf_scorer, _select_tfc_scorer

    n_docs = len(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    l_avg = np.asarray(lengths, dtype=np.int64).mean()

    def pairs(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(passage, term, tf) of passages [lo, hi), sorted by term then passage."""
        tokens = flat[starts[lo] : starts[hi]].astype(np.int64)
        docs = np.repeat(np.arange(lo, hi, dtype=np.int64), lengths[lo:hi])
        keys, tf = np.unique(tokens * n_docs + docs, return_counts=True)
        return keys % n_docs, keys // n_docs, tf

    df = np.zeros(n_vocab, dtype=np.int64)
    for lo in range(0, n_docs, chunk_docs):
        _, terms, _ = pairs(lo, min(lo + chunk_docs, n_docs))
        df += np.bincount(terms, minlength=n_vocab)
    idf = _build_idf_array({t: int(d) for t, d in enumerate(df)}, n_docs, _select_idf_scorer(method), "float32")
    tfc = _select_tfc_scorer(method)
    nnz = int(df.sum())
    indptr = np.zeros(n_vocab + 1, dtype=np.int32 if nnz < 2**31 else np.int64)
    np.cumsum(df, out=indptr[1:])
    data = np.empty(nnz, dtype=np.float32)
    indices = np.empty(nnz, dtype=np.int32)
    filled = indptr[:-1].astype(np.int64)  # next free position of each term
    for lo in range(0, n_docs, chunk_docs):
        docs, terms, tf = pairs(lo, min(lo + chunk_docs, n_docs))
        counts = np.bincount(terms, minlength=n_vocab)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # each term's first pair in this chunk
        at = filled[terms] + np.arange(len(terms)) - first[terms]
        # bm25s per passage: tfc(tf as float32, len as int, mean len as float64) in float64, times the
        # float32 idf, stored as float32
        data[at] = idf[terms] * tfc(tf_array=tf.astype(np.float32), l_d=lengths[docs], l_avg=l_avg, k1=k1, b=b)
        indices[at] = docs
        filled += counts
    return data, indices, indptr


class _Documents(Sequence):
    """Each passage's token ids as a list, read from one flat array (what bm25s iterates over)."""

    def __init__(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        self.flat, self.lengths = flat, lengths
        self.starts = np.concatenate([[0], np.cumsum(lengths)])

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> list[int]:
        return self.flat[self.starts[i] : self.starts[i + 1]].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        starts = self.starts.tolist()
        for a, b in zip(starts[:-1], starts[1:]):
            yield self.flat[a:b].tolist()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
