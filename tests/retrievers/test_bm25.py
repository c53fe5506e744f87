from __future__ import annotations

import logging
import math

import bm25s
import numpy as np
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


def _random_set(tmp_path, n: int = 300):
    rng = np.random.default_rng(0)
    words = ["apple", "banana", "cherry", "date", "runs", "running", "dogs", "the", "a", "zebra", "fish", "ponds",
             "wifi", "network", "bones", "vitamin", "sunlight", "war", "submarine", "telegram"]
    records = [(i + 1, f"p{i}", "", " ".join(rng.choice(words, rng.integers(0, 12)))) for i in range(n)]
    records = [r if r[3] else (r[0], r[1], "title only", "") for r in records]
    corpus = CorpusStore.build(iter(records), "rand", "rand-fp", ReadPolicy(), tmp_path / "corpus")
    queries = {f"q{i}": " ".join(rng.choice(words, 3)) for i in range(40)}
    return RetrievalSet("rand", corpus, queries, {q: {"p0": 1} for q in queries})


def test_index_is_saved_once_and_loaded_by_another_instance(tmp_path, caplog):
    eval_set = _random_set(tmp_path)
    with caplog.at_level(logging.INFO, logger="dr"):
        first = BM25Retriever(chunk_passages=7).retrieve(eval_set, depth=20)
    assert caplog.text.count("bm25 index built over 300 passages") == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dr"):
        second = BM25Retriever(threads=1).retrieve(eval_set, depth=20)
    assert "bm25 index built" not in caplog.text and "loaded from" in caplog.text
    assert second == first
    assert len(list((tmp_path / "dr-cache" / "bm25").glob("*/params.index.json"))) == 1


def test_chunked_index_scores_like_one_bm25s_index(tmp_path):
    """The index built from ids, a chunk at a time, retrieves what bm25s's own `index` of all tokens does."""
    eval_set = _random_set(tmp_path)
    retriever = BM25Retriever(chunk_passages=13, cache_dir=str(tmp_path / "c"))
    corpus = eval_set.corpus
    reference = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
    reference.index(retriever._tokenize(corpus.texts(corpus.active_rows)), show_progress=False)
    queries = list(eval_set.queries.values()) + ["", "zzz unknown words"]
    want_rows, want_scores = reference.retrieve(retriever._tokenize(queries), k=10, show_progress=False)
    scores, rows = retriever.search(corpus, queries, 10)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    positive = want_scores > 0
    # ties may be ordered either way: compare the retrieved sets of each query's positive-score passages
    for i in range(len(queries)):
        assert sorted(rows[i][positive[i]]) == sorted(want_rows[i][positive[i]])


def test_tokenizer_settings_and_corpus_key_the_index(tmp_path):
    corpus = _random_set(tmp_path).corpus
    base = BM25Retriever()
    keys = {base.index_key(corpus)}
    for changed in (BM25Retriever(k1=1.2), BM25Retriever(b=0.75), BM25Retriever(method="robertson"),
                    BM25Retriever(stopwords=None), BM25Retriever(stemmer=None)):
        keys.add(changed.index_key(corpus))
    assert len(keys) == 6
    assert BM25Retriever(threads=4, name="x").index_key(corpus) == base.index_key(corpus)  # retrieval-only settings
    other = CorpusStore.build(iter([(1, "x", "", "other text")]), "o", "other-fp", ReadPolicy(), tmp_path / "c2")
    assert base.index_key(other) != base.index_key(corpus)
