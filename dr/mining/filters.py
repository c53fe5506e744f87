"""False-negative control for mined candidates: pure functions of (run, scores) -> (run, counts / weights).

Hard negatives mined from a strong retriever are often unjudged positives (Qu et al., RocketQA, 2021;
"Hard Negatives or False Negatives", CIKM 2022). Two kinds of evidence mark a candidate as suspect:
- the retriever's own scores against the query's best positive (positive-aware thresholds: NV-Retriever's
  TopK-PercPos keeps candidates below a fraction of the positive's score; sentence-transformers'
  mine_hard_negatives has the same `relative_margin`, and an absolute `margin`);
- a teacher's scores (a cross-encoder, or a BM25 + dense fusion): above a threshold, or above the teacher's
  score of the positive itself.
Instead of dropping, `denoise_weights` gives each candidate a sampling weight, the teacher's probability
that it is *not* more relevant than the positive.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from dr.types import Run

FILTERS = ("positive_fraction", "positive_margin", "teacher_threshold", "teacher_above_positive")


def filter_candidates(
    run: Run,
    positive_scores: Mapping[str, float],
    fraction: float | None = None,
    margin: float | None = None,
    teacher: Mapping[str, Mapping[str, float]] | None = None,
    teacher_positive: Mapping[str, float] | None = None,
    teacher_threshold: float | None = None,
    teacher_above_positive: bool = False,
) -> tuple[Run, dict[str, int]]:
    """Drop suspect candidates; returns (filtered run, how many each filter removed).

    A candidate is removed by the first of these (in this order) that applies, so the counts add up to the
    number removed:
    - `positive_fraction`: retriever score > `fraction` x the query's best positive score (positive scores
      only: a fraction of a negative score lies above it);
    - `positive_margin`: retriever score > best positive - `margin`;
    - `teacher_threshold`: the teacher scores it above `teacher_threshold`;
    - `teacher_above_positive`: the teacher scores it above its score of the query's best positive.
    Candidates the teacher did not judge (absent from `teacher[qid]`) and queries without a positive score
    pass the corresponding filters.

    >>> run = {"q": {"a": 9.5, "b": 8.0, "c": 7.0, "d": 2.0}}
    >>> teacher = {"q": {"b": 0.2, "c": 3.0, "d": 0.9}}
    >>> filter_candidates(run, {"q": 10.0}, fraction=0.9, teacher=teacher, teacher_positive={"q": 1.0},
    ...                   teacher_threshold=2.0, teacher_above_positive=True)
    ({'q': {'b': 8.0, 'd': 2.0}}, {'positive_fraction': 1, 'positive_margin': 0, 'teacher_threshold': 1, 'teacher_above_positive': 0})
    """
    counts = dict.fromkeys(FILTERS, 0)
    out: Run = {}
    for qid, docs in run.items():
        pos = positive_scores.get(qid, -math.inf)
        frac_cut = fraction * pos if fraction is not None and math.isfinite(pos) and pos > 0 else math.inf
        margin_cut = pos - margin if margin is not None and math.isfinite(pos) else math.inf
        judged = (teacher or {}).get(qid, {})
        t_pos = (teacher_positive or {}).get(qid, math.inf) if teacher_above_positive else math.inf
        t_cut = teacher_threshold if teacher_threshold is not None else math.inf
        kept = {}
        for doc, score in docs.items():
            t = judged.get(doc, -math.inf)
            if score > frac_cut:
                counts["positive_fraction"] += 1
            elif score > margin_cut:
                counts["positive_margin"] += 1
            elif t > t_cut:
                counts["teacher_threshold"] += 1
            elif t > t_pos:
                counts["teacher_above_positive"] += 1
            else:
                kept[doc] = score
        out[qid] = kept
    return out, counts


def denoise_weights(teacher: Mapping[str, Mapping[str, float]], teacher_positive: Mapping[str, float],
                    temperature: float = 1.0) -> dict[str, dict[str, float]]:
    """Sampling weight of each judged candidate: 1 - sigmoid((teacher(c) - teacher(best positive)) / T), the
    probability under a Bradley-Terry model of the teacher's scores that the candidate is not more
    relevant than the positive. A query without a teacher score for its positive keeps weight 1.

    >>> w = denoise_weights({"q": {"a": 3.0, "b": 1.0, "c": -1.0}}, {"q": 1.0})
    >>> {d: round(x, 4) for d, x in w["q"].items()}  # 1 - sigmoid(2), 1 - sigmoid(0), 1 - sigmoid(-2)
    {'a': 0.1192, 'b': 0.5, 'c': 0.8808}
    """
    if temperature <= 0:
        raise ValueError(f"denoise temperature must be > 0, got {temperature}")
    out: dict[str, dict[str, float]] = {}
    for qid, judged in teacher.items():
        pos = teacher_positive.get(qid)
        if pos is None or not math.isfinite(pos):
            out[qid] = dict.fromkeys(judged, 1.0)
            continue
        diff = (np.fromiter(judged.values(), float, count=len(judged)) - pos) / temperature
        out[qid] = dict(zip(judged, (1.0 / (1.0 + np.exp(diff))).tolist()))  # 1 - sigmoid(diff)
    return out
