"""Choosing negatives from a ranking is a pure function of (run, qrels, window, k, rng[, weights])."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from dr.types import Negatives, Qrels, Run


def select_negatives(
    run: Run,
    qrels: Qrels,
    window: tuple[int, int],
    k: int,
    rng: np.random.Generator,
    sampling: Literal["uniform", "top"] = "uniform",
    weights: Mapping[str, Mapping[str, float]] | None = None,
) -> Negatives:
    """For each query: rank its run best first, drop every judged passage (grade > 0), keep ranks
    `window[0] <= r < window[1]` (0-based, counted after the drop) and take `k` of them, the first `k`
    (`top`) or `k` drawn without replacement (`uniform`, in rank order). Queries are visited in sorted
    order so the result depends only on `rng`'s seed.

    `weights` (uniform sampling only): {qid: {pid: w}} draws candidates with probability proportional to w
    (1 for a candidate not listed); candidates of weight 0 are never drawn, and when no more than `k` have
    a positive weight those are taken."""
    lo, hi = window
    if not 0 <= lo < hi:
        raise ValueError(f"negative window must satisfy 0 <= lo < hi, got {window}")
    if sampling not in ("uniform", "top"):
        raise ValueError(f"sampling must be 'uniform' or 'top', got {sampling!r}")
    out: Negatives = {}
    for qid in sorted(run):
        positives = {d for d, g in qrels.get(qid, {}).items() if g > 0}
        ranked = [d for d, _ in sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0])) if d not in positives]
        pool = ranked[lo:hi]
        if weights is not None and sampling == "uniform":
            w = np.array([weights.get(qid, {}).get(d, 1.0) for d in pool], dtype=np.float64)
            live = np.flatnonzero(w > 0)
            pick = live if len(live) <= k else np.sort(rng.choice(live, size=k, replace=False,
                                                                  p=w[live] / w[live].sum()))
            out[qid] = [pool[i] for i in pick]
        elif sampling == "top" or len(pool) <= k:
            out[qid] = pool[:k]
        else:
            pick = np.sort(rng.choice(len(pool), size=k, replace=False))
            out[qid] = [pool[i] for i in pick]
    return out
