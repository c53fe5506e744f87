from __future__ import annotations

import numpy as np
import pytest

from dr.mining.select import select_negatives

RUN = {"q": {"p1": 9.0, "a": 8.0, "b": 7.0, "p2": 6.5, "c": 6.0, "d": 5.0, "e": 4.0}}
QRELS = {"q": {"p1": 1, "p2": 2, "z": 0}}


def test_positives_removed_before_the_window():
    out = select_negatives(RUN, QRELS, (1, 4), 3, np.random.default_rng(0), "top")
    assert out == {"q": ["b", "c", "d"]}  # ranked without positives: a b c d e; window 1..3


def test_uniform_sampling_is_seeded_and_within_window():
    a = select_negatives(RUN, QRELS, (0, 5), 2, np.random.default_rng(3), "uniform")
    b = select_negatives(RUN, QRELS, (0, 5), 2, np.random.default_rng(3), "uniform")
    assert a == b and len(a["q"]) == 2 and set(a["q"]) <= {"a", "b", "c", "d", "e"}
    draws = {tuple(select_negatives(RUN, QRELS, (0, 5), 2, np.random.default_rng(s))["q"]) for s in range(30)}
    assert len(draws) > 3


def test_short_pool_and_bad_window():
    assert select_negatives(RUN, QRELS, (4, 10), 5, np.random.default_rng(0))["q"] == ["e"]
    with pytest.raises(ValueError, match="window"):
        select_negatives(RUN, QRELS, (3, 3), 1, np.random.default_rng(0))
