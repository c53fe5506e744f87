"""Score fusion of several runs, per query: normalize each source's scores, then a weighted sum.

    normalize({"a": 3.0, "b": 1.0, "c": 2.0}, "zscore")  # mean 2, sd sqrt(2/3): a 1.2247, b -1.2247, c 0.0
    normalize({"a": 3.0, "b": 1.0, "c": 2.0}, "minmax")  # a 1.0, b 0.0, c 0.5
    normalize({"a": 3.0, "b": 1.0, "c": 2.0}, "rrf")     # 1 / (60 + rank): a 1/61, c 1/62, b 1/63

`fuse` ranks the union of the sources' candidates. A candidate that a source did not return gets that source's
lowest normalized score for the query with z-score and min-max (Pyserini's hybrid convention: not retrieved
is at most as good as its last retrieved passage), and nothing with reciprocal rank fusion (Cormack et al.,
SIGIR 2009). A query that a source has no candidates for gets nothing from that source.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from dr.types import Run

__all__ = ["FUSIONS", "Fusion", "fuse", "normalize"]

Fusion = Literal["zscore", "minmax", "rrf"]
FUSIONS: tuple[str, ...] = ("zscore", "minmax", "rrf")


def normalize(scores: Mapping[str, float], method: Fusion = "zscore", rrf_k: int = 60) -> dict[str, float]:
    """One query's scores, normalized: z-score (population sd; all 0.0 when the scores are equal), min-max
    to [0, 1] (all 0.0 when equal) or reciprocal rank 1 / (rrf_k + rank), rank 1 the highest score (ties
    broken by passage id, so the result does not depend on dict order)."""
    if method not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {method!r}")
    if not scores:
        return {}
    if method == "rrf":
        ranked = sorted(scores, key=lambda d: (-scores[d], d))
        return {d: 1.0 / (rrf_k + rank) for rank, d in enumerate(ranked, start=1)}
    values = list(scores.values())
    if method == "minmax":
        low, high = min(values), max(values)
        return {d: (s - low) / (high - low) if high > low else 0.0 for d, s in scores.items()}
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((s - mean) ** 2 for s in values) / len(values))
    return {d: (s - mean) / sd if sd > 0 else 0.0 for d, s in scores.items()}


def fuse(runs: Sequence[Run], weights: Sequence[float], method: Fusion = "zscore", rrf_k: int = 60,
         depth: int | None = None) -> Run:
    """`{qid: {pid: sum_i weights[i] * normalized_i}}` over the union of the runs' candidates, each query
    cut to its `depth` best (all when None)."""
    if len(runs) != len(weights):
        raise ValueError(f"fusion needs one weight per source: {len(runs)} sources, {len(weights)} weights")
    if not runs:
        raise ValueError("fusion needs at least one source")
    fused: Run = {}
    for qid in sorted(set().union(*runs)):
        total: dict[str, float] = {}
        candidates = set().union(*(run.get(qid, {}) for run in runs))
        for run, weight in zip(runs, weights):
            if not run.get(qid):
                continue
            scores = normalize(run[qid], method, rrf_k)
            floor = 0.0 if method == "rrf" else min(scores.values())
            for pid in candidates:
                total[pid] = total.get(pid, 0.0) + weight * scores.get(pid, floor)
        ranked = sorted(total, key=lambda d: (-total[d], d))
        fused[qid] = {d: total[d] for d in (ranked if depth is None else ranked[:depth])}
    return fused
