"""teacher=fusion: per-row normalization on hand-worked values, and the fused teacher on the tiny train set."""
from __future__ import annotations

import numpy as np
import pytest

from dr.objectives.fusion_teacher import FusionTeacherConfig, normalize_rows


def test_normalize_rows_hand_values():
    row = np.array([[3.0, 1.0, 2.0, 0.0]])
    sd = np.sqrt(2 / 3)  # top 3 of the row: 3, 2, 1 -> mean 2, population sd sqrt(2/3)
    np.testing.assert_allclose(normalize_rows(row, "zscore", k=3), [[1 / sd, -1 / sd, 0.0, -2 / sd]])
    np.testing.assert_allclose(normalize_rows(row, "minmax", k=3), [[1.0, 0.0, 0.5, -0.5]])
    np.testing.assert_allclose(normalize_rows(row, "rrf", k=3), [[1 / 61, 1 / 63, 1 / 62, 1 / 64]])
    np.testing.assert_array_equal(normalize_rows(np.ones((2, 3)), "zscore", k=2), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="teacher.normalize"):
        normalize_rows(row, "max", k=3)


def test_config_errors():
    with pytest.raises(ValueError, match="teacher.sources"):
        FusionTeacherConfig(sources=["bm25", "colbert"])
    with pytest.raises(ValueError, match="teacher.weights"):
        FusionTeacherConfig(sources=["bm25"], weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="leave teacher.inbatch_model null"):
        FusionTeacherConfig(inbatch_model="some/cross-encoder")
    with pytest.raises(ValueError, match="must be > 0"):
        FusionTeacherConfig(scale=0.0)


def test_fusion_teacher_scores_every_pair_and_samples_from_candidates(tiny_model, train_data_dir, tmp_path):
    from dr.data.sources import beir_set
    from dr.models.dual_encoder import DualEncoder, EncoderConfig
    from dr.objectives.base import Parts
    from dr.retrievers.bm25 import BM25Retriever

    train = beir_set("train", str(train_data_dir / "scifact"), "train")
    qids = sorted(train.queries)[:10]
    encoder = DualEncoder(EncoderConfig(str(tiny_model), show_progress=False))
    parts = Parts(cfg=None, trainer=None, train_set=train, train_qids=qids, cache=None, accelerator=None,
                  out_dir=tmp_path)
    config = FusionTeacherConfig(weights=[1.0, 0.5], k=4, scale=0.5)
    teacher = config.teacher_scores(encoder, parts)

    # by hand: each source's (Q, N) scores, z-normalized over its row's top 4, weighted, scaled
    corpus = train.corpus
    texts = [train.queries[q] for q in qids]
    bm25 = BM25Retriever().index_for(corpus)
    lexical = np.stack([bm25.get_scores(t) if t else np.zeros(len(corpus)) for t in BM25Retriever()._tokenize(texts)])
    dense = encoder.encode_queries(texts) @ encoder.encode_passages(corpus.texts(corpus.active_rows)).T
    want = 0.5 * (normalize_rows(lexical, "zscore", 4) + 0.5 * normalize_rows(dense, "zscore", 4))
    pids = [str(p) for p in corpus.ids[corpus.active_rows]]
    for i, qid in enumerate(qids):
        for j, pid in enumerate(pids):
            assert teacher.score(qid, pid) == pytest.approx(want[i, j], abs=1e-4)  # any pair: the in-batch teacher
        candidates = teacher.scores[qid]
        assert set(train.positives(qid)) <= set(candidates)  # the pair sampler always sees the positives
        assert 4 <= len(candidates) <= 8 + len(train.positives(qid))  # the union of two top-4 lists, + positives
        assert all(candidates[p] == pytest.approx(teacher.score(qid, p)) for p in candidates)
    assert teacher.score("not-a-query", pids[0]) is None
    assert "fusion(1 x bm25, 0.5 x dense; zscore over top 4; scale 0.5)" == teacher.source
    with pytest.raises(ValueError, match="teacher.max_pairs"):
        FusionTeacherConfig(max_pairs=10).teacher_scores(encoder, parts)


def test_pair_teacher_scores_pairs_as_the_fused_matrix(tiny_model, train_data_dir):
    """`miner.fn_teacher=fusion`: the starting checkpoint's fusion over all of the set's queries."""
    from dr.data.sources import beir_set
    from dr.models.dual_encoder import DualEncoder, EncoderConfig
    from dr.objectives.fusion_teacher import pair_teacher

    train = beir_set("train", str(train_data_dir / "scifact"), "train")
    config = EncoderConfig(str(tiny_model), show_progress=False)
    score = pair_teacher(config, cache=None, k=4)
    full = FusionTeacherConfig(k=4).fused(DualEncoder(config), train, sorted(train.queries))
    qid = sorted(train.queries)[3]
    pids = [str(p) for p in train.corpus.ids[train.corpus.active_rows]][:5]
    assert score(train, qid, pids) == pytest.approx([full.score(qid, p) for p in pids], abs=1e-5)
    assert score(train, qid, ["no-such-passage"]) == [float("-inf")]
