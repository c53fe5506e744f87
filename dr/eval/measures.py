"""Scoring runs with ir_measures. Measures are strings (`"RR@10"`, `"nDCG@10"`, `"R@100"`).

Binary measures take the set's relevance level (TREC DL counts grade >= 2 as relevant), so `RR@10`
on dl19-pool is computed as ir_measures' `RR(rel=2)@10`; graded measures (nDCG) use the grades as given.
"""
from __future__ import annotations

from collections.abc import Sequence

import ir_measures

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def parse_measures(names: Sequence[str], rel_level: int = 1) -> dict[str, object]:
    """`{name as written: ir_measures measure}`; a bad name raises ValueError naming it."""
    parsed = {}
    for name in names:
        try:
            measure = ir_measures.parse_measure(name)
        except Exception as e:  # noqa: BLE001 - ir_measures raises several types
            raise ValueError(f"unknown measure {name!r} (ir_measures syntax, e.g. 'nDCG@10')") from e
        if rel_level != 1 and "rel" in measure.SUPPORTED_PARAMS and "rel" not in measure.params:
            measure = measure(rel=rel_level)
        parsed[name] = measure
    return parsed


def score_run(run: Run, qrels: Qrels, names: Sequence[str], rel_level: int = 1) -> dict[str, float]:
    """Mean of each measure over the queries in `qrels` (a query missing from the run scores 0)."""
    measures = parse_measures(names, rel_level)
    full_run = {qid: run.get(qid, {}) for qid in qrels}
    agg = ir_measures.calc_aggregate(list(measures.values()), qrels, full_run)
    return {name: float(agg.get(m, 0.0)) for name, m in measures.items()}


def per_query(run: Run, qrels: Qrels, name: str, rel_level: int = 1) -> dict[str, float]:
    """`{qid: value}` of one measure, every query in `qrels` included."""
    measure = parse_measures([name], rel_level)[name]
    values = {qid: 0.0 for qid in qrels}
    for m in ir_measures.iter_calc([measure], qrels, run):
        values[m.query_id] = float(m.value)
    return values


def per_query_values(run: Run, qrels: Qrels, names: Sequence[str], rel_level: int = 1) -> dict[str, dict[str, float]]:
    """`{measure name: {qid: value}}` for several measures in one pass; every query in `qrels` is
    included (0 when the run misses it), so each measure's mean equals `score_run`'s value."""
    measures = parse_measures(names, rel_level)
    by_measure = {m: name for name, m in measures.items()}
    values = {name: {qid: 0.0 for qid in qrels} for name in measures}
    for m in ir_measures.iter_calc(list(measures.values()), qrels, run):
        if m.query_id in qrels:
            values[by_measure[m.measure]][m.query_id] = float(m.value)
    return values
