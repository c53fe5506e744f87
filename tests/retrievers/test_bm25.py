from __future__ import annotations

import math

import pytest

from dr.data.corpus import CorpusStore
from dr.data.errors import ReadPolicy
from dr.data.sources import RetrievalSet
from dr.retrievers.bm25 import BM25Retriever

DOCS = {"a": "apple banana apple", "b": "banana cherry", "c": "cherry cherry cherry date", "d": "apple date"}


def lucene_bm25(tf: int, dl: int, df: int, n: int = 4, avgdl: float = 2.75, k1: float = 0.9, b: float = 0.4) -> float:
    """Lucene's BM25 (idf = ln(1 + (N - df + .5) / (df + .5)), no (k1 + 1) factor), worked by hand."""
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))


@pytest.fixture
def toy_set(tmp_path):
    records = [(i + 1, d, "", t) for i, (d, t) in enumerate(DOCS.items())]
    corpus = CorpusStore.build(iter(records), "toy", "toy-fp", ReadPolicy(), tmp_path)
    return RetrievalSet("toy", corpus, {"q": "apple cherry", "q2": "zebra"}, {"q": {"c": 1}, "q2": {"a": 1}})


def test_scores_equal_hand_computed_lucene_bm25(toy_set):
    run = BM25Retriever(stopwords=None, stemmer=None).retrieve(toy_set, depth=10)
    want = {
        "a": lucene_bm25(tf=2, dl=3, df=2),
        "b": lucene_bm25(tf=1, dl=2, df=2),
        "c": lucene_bm25(tf=3, dl=4, df=2),
        "d": lucene_bm25(tf=1, dl=2, df=2),
    }
    assert run["q"] == pytest.approx(want, rel=1e-5)
    assert max(run["q"], key=run["q"].get) == "c"


def test_no_matching_term_retrieves_nothing_and_depth_is_honoured(toy_set):
    run = BM25Retriever(stopwords=None, stemmer=None).retrieve(toy_set, depth=2)
    assert run["q2"] == {}
    assert len(run["q"]) == 2


def test_stemming_matches_inflections(tmp_path):
    records = [(1, "x", "", "running dogs"), (2, "y", "", "a cat sat")]
    corpus = CorpusStore.build(iter(records), "s", "stem-fp", ReadPolicy(), tmp_path)
    eval_set = RetrievalSet("s", corpus, {"q": "dog runs"}, {"q": {"x": 1}})
    assert list(BM25Retriever().retrieve(eval_set, 5)["q"]) == ["x"]
    assert BM25Retriever(stemmer=None).retrieve(eval_set, 5)["q"] == {}
