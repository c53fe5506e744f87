"""dr.retrievers.fusion on hand-worked values, and retriever=hybrid end to end on a tiny set."""
from __future__ import annotations

import math

import pytest

from dr.retrievers.fusion import fuse, normalize

SD = math.sqrt(2 / 3)  # population sd of 3, 1, 2


def test_normalize_hand_values():
    scores = {"a": 3.0, "b": 1.0, "c": 2.0}
    assert normalize(scores, "zscore") == pytest.approx({"a": 1 / SD, "b": -1 / SD, "c": 0.0})
    assert normalize(scores, "minmax") == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert normalize(scores, "rrf") == {"a": 1 / 61, "c": 1 / 62, "b": 1 / 63}
    assert normalize(scores, "rrf", rrf_k=0) == {"a": 1.0, "c": 0.5, "b": 1 / 3}


def test_normalize_equal_scores_empty_and_ties():
    assert normalize({"a": 2.0, "b": 2.0}, "zscore") == {"a": 0.0, "b": 0.0}
    assert normalize({"a": 2.0, "b": 2.0}, "minmax") == {"a": 0.0, "b": 0.0}
    assert normalize({"b": 2.0, "a": 2.0}, "rrf") == {"a": 1 / 61, "b": 1 / 62}  # ties by passage id
    assert normalize({}, "zscore") == {}
    with pytest.raises(ValueError, match="fusion must be one of"):
        normalize({"a": 1.0}, "max")


def test_fuse_zscore_fills_a_missing_candidate_with_the_sources_lowest():
    bm25 = {"q": {"a": 3.0, "b": 1.0, "c": 2.0}}
    dense = {"q": {"a": 0.5, "d": 0.9}}  # z: a -1, d +1; b and c missing -> -1
    got = fuse([bm25, dense], [1.0, 1.0], "zscore")
    want = {"a": 1 / SD - 1, "b": -1 / SD - 1, "c": 0.0 - 1, "d": -1 / SD + 1}
    assert got["q"] == pytest.approx(want)
    assert list(got["q"]) == ["a", "d", "c", "b"]  # ranked: 0.225, -0.225, -1, -2.22
    half = fuse([bm25, dense], [0.5, 2.0], "zscore")["q"]
    assert half["a"] == pytest.approx(0.5 / SD - 2.0) and half["d"] == pytest.approx(-0.5 / SD + 2.0)


def test_fuse_rrf_gives_nothing_for_a_missing_candidate_and_cuts_to_depth():
    bm25 = {"q": {"a": 3.0, "b": 1.0, "c": 2.0}}
    dense = {"q": {"a": 0.5, "d": 0.9}}
    got = fuse([bm25, dense], [1.0, 1.0], "rrf")["q"]
    assert got == pytest.approx({"a": 1 / 61 + 1 / 62, "d": 1 / 61, "c": 1 / 62, "b": 1 / 63})
    assert list(fuse([bm25, dense], [1.0, 1.0], "rrf", depth=2)["q"]) == ["a", "d"]


def test_fuse_queries_missing_from_a_source_and_bad_weights():
    got = fuse([{"q1": {"a": 1.0, "b": 0.0}}, {"q2": {"c": 5.0}}], [1.0, 1.0], "minmax")
    assert got == {"q1": {"a": 1.0, "b": 0.0}, "q2": {"c": 0.0}}
    with pytest.raises(ValueError, match="one weight per source"):
        fuse([{}, {}], [1.0], "zscore")


def test_hybrid_retriever_fuses_bm25_and_dense_top_k(tiny_model, tiny_data_dir):
    import functools

    from dr.data.sources import beir_set
    from dr.models.dual_encoder import DualEncoder, EncoderConfig
    from dr.retrievers.bm25 import BM25Retriever
    from dr.retrievers.dense import DenseRetriever
    from dr.retrievers.hybrid import HybridRetriever

    eval_set = beir_set("t", str(tiny_data_dir / "scifact"), "test")
    enc = DualEncoder(EncoderConfig(str(tiny_model), show_progress=False))
    bm25 = BM25Retriever()
    hybrid = HybridRetriever(enc, bm25, functools.partial(DenseRetriever), k=5, weights=(1.0, 2.0))
    run = hybrid.retrieve(eval_set, 1000)
    want = fuse([bm25.retrieve(eval_set, 5), DenseRetriever(enc).retrieve(eval_set, 5)], [1.0, 2.0], "zscore")
    assert run.keys() == want.keys()
    for qid, docs in run.items():
        assert list(docs) == list(want[qid]) and 5 <= len(docs) <= 10  # the union of two top-5 lists
        assert docs == pytest.approx(want[qid])
    with pytest.raises(ValueError, match="two weights"):
        HybridRetriever(enc, bm25, functools.partial(DenseRetriever), weights=(1.0,))
    with pytest.raises(ValueError, match="fusion must be one of"):
        HybridRetriever(enc, bm25, functools.partial(DenseRetriever), fusion="max")


def test_evaluate_with_retriever_hybrid(tiny_model, tiny_data_dir, tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "hybrid"
    env = {**os.environ, "DR_DATA_DIR": str(tiny_data_dir), "DR_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "dr.evaluate", "retriever=hybrid", "retriever.fusion=rrf",
                           "retriever.k=3", f"model.name_or_path={tiny_model}", "model.show_progress=false",
                           "eval_sets=[scifact-test]", f"hydra.run.dir={out}"],
                          cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["scifact-test"] and 0.0 < metrics["scifact-test"]["nDCG@10"] <= 1.0
    lines = (out / "runs" / "scifact-test.trec").read_text().splitlines()
    per_query: dict[str, int] = {}
    for line in lines:
        per_query[line.split()[0]] = per_query.get(line.split()[0], 0) + 1
    assert all(3 <= n <= 6 for n in per_query.values())  # the union of two top-3 lists
