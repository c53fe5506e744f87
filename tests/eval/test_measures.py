"""Metrics against values worked out by hand on a three-query example."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dr.data.runs import run_from_search, write_trec_run
from dr.eval.measures import per_query, score_run

QRELS = {"q1": {"a": 1, "b": 0, "c": 1}, "q2": {"x": 2, "y": 1}, "q3": {"z": 1}}
RUN = {
    "q1": {"b": 3.0, "a": 2.0, "d": 1.0, "c": 0.5},  # relevant at ranks 2 and 4
    "q2": {"x": 5.0, "y": 4.0},  # perfect
    "q3": {"u": 1.0, "v": 0.5},  # nothing relevant
}


def test_three_query_example():
    got = score_run(RUN, QRELS, ["RR@10", "nDCG@10", "R@2", "R@100"])
    # q1: DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3).  q2: 1.  q3: 0.
    ndcg_q1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert got["RR@10"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert got["nDCG@10"] == pytest.approx((ndcg_q1 + 1 + 0) / 3)
    assert got["R@2"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert got["R@100"] == pytest.approx((1 + 1 + 0) / 3)
    assert per_query(RUN, QRELS, "RR@10") == pytest.approx({"q1": 0.5, "q2": 1.0, "q3": 0.0})


def test_graded_nDCG_uses_grades():
    qrels = {"q": {"a": 3, "b": 1}}
    run = {"q": {"b": 2.0, "a": 1.0}}
    want = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    assert score_run(run, qrels, ["nDCG@10"])["nDCG@10"] == pytest.approx(want)


def test_rel_level_applies_to_binary_measures_only():
    qrels = {"q": {"x": 2, "y": 1}}
    run = {"q": {"y": 2.0, "x": 1.0}}
    lenient = score_run(run, qrels, ["RR@10", "R@1", "nDCG@10"], rel_level=1)
    trec_dl = score_run(run, qrels, ["RR@10", "R@1", "nDCG@10"], rel_level=2)
    assert (lenient["RR@10"], trec_dl["RR@10"]) == (pytest.approx(1.0), pytest.approx(0.5))
    assert (lenient["R@1"], trec_dl["R@1"]) == (pytest.approx(0.5), pytest.approx(0.0))
    assert lenient["nDCG@10"] == pytest.approx(trec_dl["nDCG@10"])


def test_query_missing_from_run_scores_zero():
    got = score_run({"q2": RUN["q2"]}, QRELS, ["RR@10"])
    assert got["RR@10"] == pytest.approx(1 / 3)


def test_unknown_measure_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown measure 'NDCG10'"):
        score_run(RUN, QRELS, ["NDCG10"])


def test_run_from_search_drops_padding_and_maps_ids():
    scores = np.array([[0.9, 0.5, -1.0]], dtype=np.float32)
    rows = np.array([[2, 0, -1]])
    run = run_from_search(["q"], scores, rows, np.array(["d0", "d1", "d2"]))
    assert run == {"q": {"d2": pytest.approx(0.9), "d0": pytest.approx(0.5)}}


def test_trec_run_file(tmp_path):
    write_trec_run({"q1": {"a": 0.5, "b": 2.0}}, tmp_path / "r.trec", tag="t")
    assert (tmp_path / "r.trec").read_text().splitlines() == ["q1 Q0 b 1 2.000000 t", "q1 Q0 a 2 0.500000 t"]


def test_chunked_scoring_equals_one_pass_and_array_runs_act_as_dicts(monkeypatch):
    """Scoring a few queries at a time gives ir_measures' one-pass aggregate, and an ArrayRun scores as
    the dict it stands for."""
    import ir_measures
    import numpy as np

    from dr.data.runs import ArrayRun
    from dr.eval import measures as M

    rng = np.random.default_rng(0)
    docids = np.array([f"d{i}" for i in range(30)])
    qids = [f"q{i}" for i in range(9)]
    rows = np.stack([rng.permutation(30)[:12] for _ in qids])
    rows[2, 5:] = -1  # a query with fewer hits than the depth
    scores = np.sort(rng.standard_normal((9, 12)), axis=1)[:, ::-1].astype(np.float32)
    run = ArrayRun(qids[:8], scores[:8], rows[:8], docids)  # q8 is missing from the run: it scores 0
    qrels = {q: {f"d{j}": int(rng.integers(0, 3)) for j in rng.choice(30, 5, replace=False)} for q in qids}
    as_dict = {q: run[q] for q in run}
    assert len(as_dict["q2"]) == 5 and set(run) == set(qids[:8])
    names = ["RR@10", "nDCG@10", "R@5", "NumRet"]
    monkeypatch.setattr(M, "CHUNK", 2)
    got = M.score_run(run, qrels, names)
    want = ir_measures.calc_aggregate([ir_measures.parse_measure(n) for n in names], qrels,
                                      {q: as_dict.get(q, {}) for q in qrels})
    for n in names[:3]:  # mean measures: the missing query counts 0 in both
        assert got[n] == pytest.approx(want[ir_measures.parse_measure(n)], abs=1e-12)
        assert got[n] == pytest.approx(sum(M.per_query(run, qrels, n).values()) / len(qrels), abs=1e-12)
    assert got["NumRet"] == sum(len(v) for v in as_dict.values())  # a sum, not a mean
