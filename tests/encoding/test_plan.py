from __future__ import annotations

import numpy as np
import pytest

from dr.encoding.plan import group_batches, length_sorted_batches, rank_batches


def test_batches_are_longest_first_and_stable_on_ties():
    batches = length_sorted_batches(np.array([3, 9, 3, 5, 9]), 2)
    assert [b.tolist() for b in batches] == [[1, 4], [3, 0], [2]]


def test_every_position_once_whatever_the_world_size():
    lengths = np.random.default_rng(0).integers(1, 50, size=101)
    batches = length_sorted_batches(lengths, 8)
    for world in (1, 2, 3, 7):
        shards = [rank_batches(batches, r, world) for r in range(world)]
        # the same batches, whoever encodes them: the plan does not depend on the world size
        assert sorted(tuple(b) for s in shards for b in s) == sorted(tuple(b) for b in batches)
        assert sorted(np.concatenate([np.concatenate(s) for s in shards if s]).tolist()) == list(range(101))
        sizes = [sum(len(b) for b in s) for s in shards]
        assert max(sizes) - min(sizes) <= 8  # balanced to within one batch


def test_group_batches_bounds_texts_per_group():
    batches = [np.arange(4), np.arange(4), np.arange(3), np.arange(5)]
    groups = group_batches(batches, 8)
    assert [[len(b) for b in g] for g in groups] == [[4, 4], [3, 5]]
    assert [[len(b) for b in g] for g in group_batches(batches, 2)] == [[4], [4], [3], [5]]  # one batch at least


def test_bad_arguments():
    with pytest.raises(ValueError):
        length_sorted_batches(np.array([1]), 0)
    with pytest.raises(ValueError):
        rank_batches([], 2, 2)
