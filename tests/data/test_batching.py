"""GroupSchedule's negative-aware batches (NGAME) and curriculum windows: pure functions of (seed, step),
every query once per epoch, batches inside clusters, negatives inside the step's rank window."""
from __future__ import annotations

import numpy as np
import pytest

from dr.data.groups import BatchingConfig, GroupSchedule, cluster_order, curriculum_window
from dr.data.sources import RetrievalSet


class FakeCorpus:
    def __contains__(self, docid: str) -> bool:
        return True


def make_set(n: int = 24) -> tuple[RetrievalSet, list[str], dict[str, list[str]]]:
    """n queries, each with positive f"{q}-p" and a ranked list of 100 negatives f"{q}-r{rank}"."""
    queries = {f"q{i:02d}": f"query {i}" for i in range(n)}
    qrels = {q: {f"{q}-p": 1} for q in queries}
    negatives = {q: [f"{q}-r{r}" for r in range(100)] for q in queries}
    return RetrievalSet("toy", FakeCorpus(), queries, qrels), sorted(queries), negatives


def test_curriculum_window_ends_and_rounding():
    assert curriculum_window((50, 100), (0, 10), 0, 15) == (50, 100)
    assert curriculum_window((50, 100), (0, 10), 14, 15) == (0, 10)
    assert curriculum_window((50, 100), (0, 10), 7, 15) == (25, 55)  # halfway: 50 - 25, 100 - 45
    assert curriculum_window((50, 100), (0, 10), 99, 15) == (0, 10)  # past the end: the end window
    assert curriculum_window((5, 6), (5, 6), 3, 1) == (5, 6)


def test_batches_stay_in_clusters_and_cover_each_epoch_once():
    train, qids, negatives = make_set(24)
    labels = np.repeat([2, 0, 1], 8)  # three clusters of 8 queries: one per batch of 8
    sched = GroupSchedule(train, qids, negatives, 1, global_batch=8, seed=3, clusters=labels)
    for epoch in range(2):
        seen = []
        for b in range(3):
            batch = sched.batch(epoch * 3 + b)
            seen += [g.qid for g in batch]
            assert len({int(labels[qids.index(g.qid)]) for g in batch}) == 1  # one cluster per batch
        assert sorted(seen) == qids  # every query once an epoch
    again = GroupSchedule(train, qids, negatives, 1, global_batch=8, seed=3, clusters=labels)
    assert [g.passage_ids for g in again.batch(4)] == [g.passage_ids for g in sched.batch(4)]  # pure
    other = GroupSchedule(train, qids, negatives, 1, global_batch=8, seed=4, clusters=labels)
    assert [[g.qid for g in other.batch(s)] for s in range(3)] != [[g.qid for g in sched.batch(s)] for s in range(3)]
    # without clusters the schedule is the plain shuffle it always was
    plain = GroupSchedule(train, qids, negatives, 1, global_batch=8, seed=3)
    order = np.random.default_rng([3, 0]).permutation(24)
    assert [g.qid for g in plain.batch(1)] == [qids[i] for i in order[8:16]]
    with pytest.raises(ValueError, match="cluster labels"):
        sched.set_clusters([0, 1])


def test_cluster_order_keeps_every_row_once():
    labels = np.random.default_rng(0).integers(0, 5, size=50)
    order = cluster_order(labels, np.random.default_rng(1))
    assert sorted(order.tolist()) == list(range(50))
    runs = [labels[i] for i in order]
    assert sum(a != b for a, b in zip(runs, runs[1:])) == len(set(labels.tolist())) - 1  # contiguous clusters


def test_curriculum_draws_negatives_from_the_moving_window():
    train, qids, negatives = make_set(24)
    sched = GroupSchedule(train, qids, negatives, 2, global_batch=8, seed=0, window=((50, 100), (0, 10)),
                          total_steps=15)
    ranks = lambda step: [int(p.split("-r")[1]) for g in sched.batch(step) for p in g.passage_ids[1:]]  # noqa: E731
    assert all(50 <= r < 100 for r in ranks(0)) and all(0 <= r < 10 for r in ranks(14))
    assert all(25 <= r < 55 for r in ranks(7))
    # a list shorter than the window's start: its last hi - lo entries (here all 5), not random passages
    sched.set_negatives({q: v[:5] for q, v in negatives.items()})
    assert set(ranks(0)) <= set(range(5))
    sched.set_negatives({q: v[:60] for q, v in negatives.items()})  # window [50, 100) of 60: ranks 50..59
    assert set(ranks(0)) <= set(range(50, 60))


def test_batching_config_checks():
    assert BatchingConfig(clusters=-1).n_clusters(713, 16) == 44
    assert BatchingConfig(clusters=500).n_clusters(100, 16) == 100
    with pytest.raises(ValueError, match="go together"):
        BatchingConfig(window_start=[0, 10])
    with pytest.raises(ValueError, match="lo < hi"):
        BatchingConfig(window_start=[10, 10], window_end=[0, 5])
    with pytest.raises(ValueError, match="clusters"):
        BatchingConfig(clusters=-2)


def test_doctests_and_cluster_order_at_ms_marco_scale():
    import doctest
    import time

    import dr.data.groups as groups

    failures, attempted = doctest.testmod(groups)
    assert failures == 0 and attempted >= 2
    labels = np.random.default_rng(0).integers(0, 25_000, size=400_000)  # MS MARCO's queries, one cluster a batch
    start = time.perf_counter()
    order = cluster_order(labels, np.random.default_rng(1))
    assert time.perf_counter() - start < 5.0 and len(np.unique(order)) == 400_000


def test_new_clusters_replace_the_cached_epoch_order():
    train, qids, negatives = make_set(24)
    sched = GroupSchedule(train, qids, negatives, 1, global_batch=8, seed=3, clusters=np.repeat([0, 1, 2], 8))
    sched.batch(0)  # caches epoch 0's order
    sched.set_clusters(np.tile([0, 1, 2], 8))
    sched.set_clusters(np.tile([0, 1, 2], 8))  # twice before the next batch
    labels = np.tile([0, 1, 2], 8)
    assert len({int(labels[qids.index(g.qid)]) for g in sched.batch(1)}) == 1
