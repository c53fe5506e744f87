"""Cross-encoder: pair scoring, export that plain transformers and sentence-transformers load, reranking."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import PASSAGES, QUERIES
from dr.models.cross_encoder import CrossEncoder, CrossEncoderConfig
from dr.models.export import export_ranker
from dr.retrievers.rerank import RerankRetriever


def _ranker(path, **kw) -> CrossEncoder:
    kw.setdefault("show_progress", False)
    return CrossEncoder(CrossEncoderConfig(name_or_path=str(path), **kw))


def _pairs():
    texts = [f"{t} {x}" for t, x in PASSAGES.values()]
    queries = list(QUERIES.values())
    return [q for q in queries for _ in texts], texts * len(queries)


def test_sorted_batches_match_one_pair_at_a_time(tiny_model):
    torch.manual_seed(0)
    ranker = _ranker(tiny_model, batch_size=3, max_length=24)
    queries, passages = _pairs()
    got = ranker.score(queries, passages)
    ranker.eval()  # score() restores the mode it found; compare without dropout
    for i in [0, 5, len(queries) - 1]:
        with torch.no_grad():
            alone = ranker(ranker.tokenize([queries[i]], [passages[i]]))
        assert got[i] == pytest.approx(float(alone[0]), abs=1e-5)
    assert len(set(np.round(got, 6).tolist())) > 1  # not a constant


def test_export_loads_in_transformers_and_sentence_transformers(tiny_model, tmp_path):
    torch.manual_seed(0)
    ranker = _ranker(tiny_model, max_length=24)
    out = export_ranker(ranker, tmp_path / "export")
    queries, passages = _pairs()
    ours = ranker.score(queries, passages)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    batch = tok(queries[:4], passages[:4], padding=True, truncation=True, max_length=24, return_tensors="pt")
    with torch.no_grad():
        hf = model(**batch).logits[:, 0].numpy()
    np.testing.assert_allclose(hf, ours[:4], atol=1e-5)
    from sentence_transformers import CrossEncoder as STCrossEncoder

    st = STCrossEncoder(str(out), max_length=24, device="cpu", activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(st.predict(list(zip(queries[:4], passages[:4]))), ours[:4], atol=1e-5)
    again = _ranker(out, max_length=24).score(queries, passages)  # our own loader reads it back
    np.testing.assert_allclose(again, ours, atol=1e-6)


def test_score_rejects_mismatched_lengths(tiny_model):
    with pytest.raises(ValueError, match="queries but"):
        _ranker(tiny_model).score(["a", "b"], ["x"])
    with pytest.raises(ValueError):
        CrossEncoderConfig(name_or_path="x", max_length=2)


class FixedFirstStage:
    name = "fixed"

    def __init__(self, run):
        self.run = run

    def retrieve(self, eval_set, depth):
        return {q: dict(list(d.items())[:depth]) for q, d in self.run.items()}


class LengthRanker:
    """Scores a pair by the passage's length: a ranker whose order is known in advance."""

    def score(self, queries, passages, desc=""):
        return np.array([float(len(p)) for p in passages], dtype=np.float32)


def test_rerank_reorders_top_depth_and_keeps_the_rest_below(tiny_data_dir):
    from dr.data.sources import beir_set

    test = beir_set("scifact-test", str(tiny_data_dir / "scifact"), "test")
    qid = next(iter(test.queries))
    ids = [str(x) for x in test.corpus.ids[test.corpus.active_rows]][:6]
    first = {qid: {d: 10.0 - i for i, d in enumerate(ids)}}  # first-stage order = ids
    run = RerankRetriever(FixedFirstStage(first), LengthRanker(), depth=3).retrieve(test, 6)[qid]
    order = sorted(run, key=run.get, reverse=True)
    texts = dict(zip(ids, test.corpus.texts(test.corpus.rows_of(ids))))
    assert order[:3] == sorted(ids[:3], key=lambda d: len(texts[d]), reverse=True)
    assert order[3:] == ids[3:]  # below every reranked passage, in first-stage order
