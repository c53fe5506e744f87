"""Balanced topic-aware sampling: one cluster per batch, even margin bins, determinism."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dr.data.sources import RetrievalSet
from dr.data.tas import TasConfig, TasSchedule, draw_pairs, margin_bins, query_pairs
from dr.data.teacher import TeacherScores
from dr.index import kmeans_assign


class FakeCorpus:
    def __contains__(self, docid: str) -> bool:
        return not docid.startswith("missing")


def make_set(n_queries: int = 40, n_cands: int = 20) -> tuple[RetrievalSet, TeacherScores]:
    """Each query q has positive f"{q}-p" (teacher 10) and negatives with scores 0..n_cands-1 spread so
    the margins 10 - s fall in every bin."""
    queries = {f"q{i}": f"query {i}" for i in range(n_queries)}
    qrels = {q: {f"{q}-p": 1} for q in queries}
    scores = {q: {f"{q}-p": 10.0, **{f"{q}-n{j}": 10.0 * j / n_cands for j in range(n_cands)}} for q in queries}
    return RetrievalSet("toy", FakeCorpus(), queries, qrels), TeacherScores(scores, {}, "toy")


def test_margin_bins_equal_width():
    bins = margin_bins(np.array([0.0, 0.9, 1.0, 5.0, 9.99, 10.0]), 10)
    assert bins.tolist() == [0, 0, 1, 5, 9, 9]
    assert margin_bins(np.array([2.0, 2.0]), 10).tolist() == [0, 0]


def test_balanced_sampling_is_even_across_bins():
    # skewed margins: 90 pairs in the lowest bin, one pair in each of the other 9 bins
    margins = np.concatenate([np.full(90, 0.05), np.arange(1, 10) + 0.5])
    scores = {"q": {"p": 20.0, **{f"n{i}": 20.0 - m for i, m in enumerate(margins)}}}
    pairs = query_pairs("q", ["p"], TeacherScores(scores, {}, "x"), bins=10)
    rng = np.random.default_rng(0)
    draws = 20_000
    counts = Counter(int(pairs.bin[draw_pairs(pairs, 1, "balanced", rng)[0]]) for _ in range(draws))
    assert set(counts) == set(range(10))
    for b in range(10):  # uniform over bins: 2,000 each; binomial sd ~42
        assert abs(counts[b] - draws / 10) < 200
    # random sampling follows the pair counts instead: ~90% from the lowest bin
    counts = Counter(int(pairs.bin[draw_pairs(pairs, 1, "random", rng)[0]]) for _ in range(5_000))
    assert counts[0] / 5_000 > 0.85
    # hard-margin: only the lowest-margin bin
    assert {int(pairs.bin[draw_pairs(pairs, 1, "hard_margin", rng)[0]]) for _ in range(200)} == {0}


def test_explicit_pairs_from_tasb_file_are_used():
    teacher = TeacherScores({"q": {"a": 5.0, "b": 1.0, "c": 0.0}}, {"q": [("a", "b")]}, "x")
    pairs = query_pairs("q", ["a"], teacher, bins=10)
    assert (pairs.pos, pairs.neg) == (["a"], ["b"])  # (a, c) is not in the file's pairs
    assert query_pairs("other", ["a"], teacher, bins=10) is None


def test_each_batch_comes_from_one_cluster():
    train_set, teacher = make_set(40)
    qids = sorted(train_set.queries)
    clusters = np.array([i % 4 for i in range(40)])  # 4 clusters of 10 queries
    schedule = TasSchedule(train_set, qids, teacher, clusters, TasConfig(clusters=4, clusters_per_batch=1),
                           negatives_per_query=1, global_batch=8, seed=3)
    cluster_of = dict(zip(qids, clusters.tolist()))
    seen = Counter()
    for step in range(200):
        batch = schedule.batch(step)
        assert len(batch) == 8 and len({g.qid for g in batch}) == 8
        topics = {cluster_of[g.qid] for g in batch}
        assert len(topics) == 1
        seen[topics.pop()] += 1
        for g in batch:
            assert g.passage_ids[0] == f"{g.qid}-p" and len(g.passage_ids) == 2
            assert g.teacher == [teacher.scores[g.qid][p] for p in g.passage_ids]
    assert set(seen) == {0, 1, 2, 3}  # clusters are picked uniformly


def test_small_clusters_are_filled_up_and_several_per_batch():
    train_set, teacher = make_set(40)
    qids = sorted(train_set.queries)
    clusters = np.array([i % 10 for i in range(40)])  # 10 clusters of 4 queries; batch 8 needs 2
    cluster_of = dict(zip(qids, clusters.tolist()))
    schedule = TasSchedule(train_set, qids, teacher, clusters, TasConfig(clusters=10), 1, 8, seed=0)
    for step in range(50):
        batch = schedule.batch(step)
        assert len({g.qid for g in batch}) == 8
        assert len({cluster_of[g.qid] for g in batch}) == 2
    two = TasSchedule(train_set, qids, teacher, np.array([i % 4 for i in range(40)]),
                      TasConfig(clusters=4, clusters_per_batch=2), 1, 8, seed=0)
    assert all(len({i % 4 for i in (qids.index(g.qid) for g in two.batch(s))}) <= 2 for s in range(50))


def test_schedule_is_a_pure_function_of_seed_and_step():
    train_set, teacher = make_set(40)
    qids = sorted(train_set.queries)
    make = lambda seed: TasSchedule(train_set, qids, teacher, None, TasConfig(clusters=0), 2, 8, seed)  # noqa: E731
    a, b = make(1), make(1)
    assert [g.passage_ids for g in a.batch(7)] == [g.passage_ids for g in b.batch(7)]
    assert [g.qid for g in a.batch(7)] != [g.qid for g in make(2).batch(7)]
    g = a.batch(0)[0]
    assert len(g.passage_ids) == 3 and len(g.teacher) == 3  # two negatives sharing one positive


def test_queries_without_pairs_are_left_out_and_counted(caplog):
    train_set, teacher = make_set(10)
    del teacher.scores["q3"]
    schedule = TasSchedule(train_set, sorted(train_set.queries), teacher, None, TasConfig(clusters=0), 1, 4, 0)
    assert "q3" not in schedule.qids and len(schedule.qids) == 9
    assert "1 of 10 training queries" in caplog.text
    with pytest.raises(ValueError, match="larger than"):
        TasSchedule(train_set, sorted(train_set.queries), teacher, None, TasConfig(clusters=0), 1, 10, 0)


def test_kmeans_assign_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centers = np.eye(4, 16, dtype=np.float32) * 10
    x = np.concatenate([c + rng.normal(size=(25, 16)).astype(np.float32) for c in centers])
    labels = kmeans_assign(x, 4, seed=0)
    for i in range(4):  # each true cluster maps to exactly one label
        assert len(set(labels[i * 25 : (i + 1) * 25].tolist())) == 1
    assert len(set(labels.tolist())) == 4
    with pytest.raises(ValueError):
        kmeans_assign(x, 101)


def test_config_validation():
    with pytest.raises(ValueError):
        TasConfig(pair_sampling="hardest")
    with pytest.raises(ValueError):
        TasConfig(bins=0)


def test_teacher_passages_missing_from_the_corpus_are_an_error():
    train_set, teacher = make_set(10)
    teacher.scores["q2"]["missing-7"] = 1.0
    with pytest.raises(ValueError, match="passage 'missing-7' .query 'q2'. is not in the corpus of toy"):
        TasSchedule(train_set, sorted(train_set.queries), teacher, None, TasConfig(clusters=0), 1, 4, 0)
