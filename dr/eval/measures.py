"""Scoring runs with ir_measures. Measures are strings (`"RR@10"`, `"nDCG@10"`, `"R@100"`).

Binary measures take the set's relevance level (TREC DL counts grade >= 2 as relevant), so `RR@10`
on dl19-pool is computed as ir_measures' `RR(rel=2)@10`; graded measures (nDCG) use the grades as given.

Runs are scored `chunk` queries at a time (each measure's own aggregator then combines the per-query
values), so a large run (MS MARCO dev: 6,980 queries x 1,000 passages) is never converted into one
evaluator input at once.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import ir_measures

from dr.types import Qrels, Run

CHUNK = 1000


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


def _iter_values(run: Run, qrels: Qrels, measures: Sequence, chunk: int = CHUNK) -> Iterator[tuple[object, str, float]]:
    """(measure, qid, value) for every measure and every query in `qrels` (0 where the run has none)."""
    qids = list(qrels)
    for start in range(0, len(qids), chunk):
        sub_qrels = {q: qrels[q] for q in qids[start : start + chunk]}
        sub_run = {q: dict(run[q]) for q in sub_qrels if q in run}
        seen = set()
        for m in ir_measures.iter_calc(list(measures), sub_qrels, sub_run):
            if m.query_id in sub_qrels:
                seen.add((m.measure, m.query_id))
                yield m.measure, m.query_id, float(m.value)
        for measure in measures:
            for q in sub_qrels:
                if (measure, q) not in seen:
                    yield measure, q, 0.0


def score_run(run: Run, qrels: Qrels, names: Sequence[str], rel_level: int = 1) -> dict[str, float]:
    """Each measure aggregated (its ir_measures aggregator: the mean for RR, nDCG, R) over the queries in
    `qrels`; a query missing from the run scores 0."""
    measures = parse_measures(names, rel_level)
    aggregators = {m: m.aggregator() for m in measures.values()}
    for measure, _, value in _iter_values(run, qrels, list(measures.values())):
        aggregators[measure].add(value)
    return {name: float(aggregators[m].result()) if qrels else 0.0 for name, m in measures.items()}


def per_query(run: Run, qrels: Qrels, name: str, rel_level: int = 1) -> dict[str, float]:
    """`{qid: value}` of one measure, every query in `qrels` included."""
    return per_query_values(run, qrels, [name], rel_level)[name]


def per_query_values(run: Run, qrels: Qrels, names: Sequence[str], rel_level: int = 1) -> dict[str, dict[str, float]]:
    """`{measure name: {qid: value}}` for several measures in one pass; every query in `qrels` is
    included (0 when the run misses it), so each measure's mean equals `score_run`'s value."""
    measures = parse_measures(names, rel_level)
    by_measure = {m: name for name, m in measures.items()}
    values = {name: {qid: 0.0 for qid in qrels} for name in measures}
    for measure, qid, value in _iter_values(run, qrels, list(measures.values())):
        values[by_measure[measure]][qid] = value
    return values
