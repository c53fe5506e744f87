"""Evaluate a retriever on named sets: run -> ir_measures -> metrics.json, TREC runs and a table.

Under several processes a sharded retriever (`retriever.sharded`, the dense one) runs on all of them and
the first process gets the merged run; any other retriever runs on the first process alone. Only the
first process scores the runs and writes files; the others get empty metrics.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dr.data.runs import write_trec_run
from dr.data.sources import RetrievalSet
from dr.dist import world
from dr.eval.measures import per_query_values, score_run
from dr.eval.perquery import write_per_query
from dr.io import atomic_write_json
from dr.retrievers import Retriever, retrieve_run
from dr.types import Run

logger = logging.getLogger(__name__)

DEFAULT_MEASURES = ("RR@10", "nDCG@10", "R@100", "R@1000")


@dataclass
class Evaluator:
    """`depth` is how many passages each query retrieves (at least the largest cutoff in `measures`)."""

    measures: Sequence[str] = DEFAULT_MEASURES
    depth: int = 1000
    timings: dict[str, float] = field(default_factory=dict)

    def evaluate_set(self, retriever: Retriever, eval_set: RetrievalSet) -> tuple[Run, dict[str, float]]:
        """(run, metrics) on the first process; ({}, {}) on the others."""
        start = time.perf_counter()
        run = retrieve_run(retriever, eval_set, self.depth)
        self.timings[eval_set.name] = time.perf_counter() - start
        if world()[0] != 0:
            return {}, {}
        return run, score_run(run, eval_set.qrels, self.measures, eval_set.rel_level)

    def evaluate(
        self, retriever: Retriever, sets: Sequence[RetrievalSet], out_dir: str | Path | None = None,
        per_query_dir: str | Path | None = None,
    ) -> dict[str, dict[str, float]]:
        """`{set name: {measure: value}}`; with `out_dir`, also metrics.json, runs/<set>.trec and
        perquery/<set>.tsv there; with `per_query_dir`, the per-query values (`dr.eval.perquery`) there."""
        metrics: dict[str, dict[str, float]] = {}
        if per_query_dir is None and out_dir is not None:
            per_query_dir = Path(out_dir) / "perquery"
        for eval_set in sets:
            run, values = self.evaluate_set(retriever, eval_set)
            if world()[0] != 0:
                continue
            metrics[eval_set.name] = values
            logger.info("%s on %s: %s", retriever.name, eval_set.name, metrics[eval_set.name])
            if out_dir is not None:
                write_trec_run(run, Path(out_dir) / "runs" / f"{eval_set.name}.trec", tag=retriever.name)
            if per_query_dir is not None:
                values = per_query_values(run, eval_set.qrels, self.measures, eval_set.rel_level)
                write_per_query(values, Path(per_query_dir) / f"{eval_set.name}.tsv")
        if out_dir is not None and world()[0] == 0:
            atomic_write_json(Path(out_dir) / "metrics.json", metrics)
        return metrics


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per set, one column per measure."""
    names = list(dict.fromkeys(m for values in metrics.values() for m in values))
    lines = ["| set | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for set_name, values in metrics.items():
        cells = [f"{values[n]:.4f}" if n in values else "" for n in names]
        lines.append(f"| {set_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
