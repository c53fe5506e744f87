"""bm25_csc: the chunked builder gives bm25s's own score matrix, bit for bit."""
from __future__ import annotations

import bm25s
import numpy as np
import pytest

from dr.retrievers.bm25 import _Documents, bm25_csc


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire"])
@pytest.mark.parametrize("chunk_docs", [1, 7, 1000])
def test_equals_bm25s(method, chunk_docs):
    rng = np.random.default_rng(0)
    n_docs, n_vocab = 60, 25
    lengths = rng.integers(0, 30, n_docs)  # some empty passages too
    lengths[[3, 17]] = 0
    flat = (rng.zipf(1.5, int(lengths.sum())) % n_vocab).astype(np.int32)  # repeated terms: tf > 1
    data, indices, indptr = bm25_csc(flat, lengths, n_vocab, k1=0.9, b=0.4, method=method, chunk_docs=chunk_docs)
    ref = bm25s.BM25(k1=0.9, b=0.4, method=method).build_index_from_ids(
        list(range(n_vocab)), _Documents(flat, lengths), show_progress=False)
    assert data.dtype == np.float32 and indices.dtype == np.int32
    assert np.array_equal(indptr, ref["indptr"])
    assert np.array_equal(indices, ref["indices"])
    assert np.array_equal(data, ref["data"])  # exact: the same arithmetic in the same dtypes


def test_hand_worked_lucene():
    # two passages: [0, 0, 1] and [1]; lengths 3 and 1, mean 2; k1 = 1, b = 1
    # idf(t) = log(1 + (N - df + 0.5) / (df + 0.5)): term 0 (df 1) log(1 + 1.5/1.5) = log 2; term 1 (df 2) log(1 + 0.5/2.5) = log 1.2
    # tfc = tf / (k1 * (1 - b + b * len / mean) + tf): (0, p0) 2 / (1.5 + 2) = 4/7; (1, p0) 1 / (1.5 + 1) = 0.4;
    # (1, p1) 1 / (0.5 + 1) = 2/3
    data, indices, indptr = bm25_csc(np.array([0, 0, 1, 1], np.int32), np.array([3, 1]), 2, k1=1.0, b=1.0,
                                     method="lucene")
    assert indptr.tolist() == [0, 1, 3] and indices.tolist() == [0, 0, 1]
    assert data.tolist() == pytest.approx([np.log(2) * 4 / 7, np.log(1.2) * 0.4, np.log(1.2) * 2 / 3], rel=1e-6)
