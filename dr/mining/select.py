"""Choosing negatives from a ranking is a pure function of (run, qrels, window, k, rng)."""
from __future__ import annotations

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
) -> Negatives:
    """For each query: rank its run best first, drop every judged passage (grade > 0), keep ranks
    `window[0] <= r < window[1]` (0-based, counted after the drop) and take `k` of them, the first `k`
    (`top`) or `k` drawn without replacement (`uniform`, in rank order). Queries are visited in sorted
    order so the result depends only on `rng`'s seed."""
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
        if sampling == "top" or len(pool) <= k:
            out[qid] = pool[:k]
        else:
            pick = np.sort(rng.choice(len(pool), size=k, replace=False))
            out[qid] = [pool[i] for i in pick]
    return out
