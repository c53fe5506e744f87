"""Runs as `{qid: {docid: score}}`, built from index results and written as TREC run files.

A run from an index is an `ArrayRun`: a read-only mapping over the (Q, k) score and row arrays that
builds a query's `{docid: score}` only when asked, so 6,980 queries x 1,000 passages (MS MARCO dev) cost
the arrays (~84 MB), not seven million dictionary entries.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from dr.io import atomic_open
from dr.types import Run


class ArrayRun(Mapping):
    """`{qid: {docid: score}}` over (Q, k) `scores` and `rows` (-1: no passage) with `docids[row]`."""

    def __init__(self, qids: Sequence[str], scores: np.ndarray, rows: np.ndarray, docids: np.ndarray) -> None:
        self.qids = list(qids)
        self._at = {q: i for i, q in enumerate(self.qids)}
        self.scores, self.rows, self.docids = scores, rows, docids

    def __getitem__(self, qid: str) -> dict[str, float]:
        i = self._at[qid]
        keep = self.rows[i] >= 0
        return dict(zip(self.docids[self.rows[i][keep]].tolist(), self.scores[i][keep].astype(float).tolist()))

    def __iter__(self) -> Iterator[str]:
        return iter(self.qids)

    def __len__(self) -> int:
        return len(self.qids)


def run_from_search(qids: Sequence[str], scores: np.ndarray, rows: np.ndarray, docids: np.ndarray) -> ArrayRun:
    """(Q, k) scores and row ids from an index -> run; rows of -1 (fewer hits than k) are dropped."""
    return ArrayRun(qids, scores, rows, docids)


def write_trec_run(run: Run, path: str | Path, tag: str) -> None:
    """`qid Q0 docid rank score tag`, best first, written atomically."""
    with atomic_open(path) as f:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (docid, score) in enumerate(ranked, start=1):
                f.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


def read_trec_run(path: str | Path) -> Run:
    """A TREC run file (`qid Q0 docid rank score tag`) as `{qid: {docid: score}}`; a malformed line
    raises ValueError naming the file and line."""
    path = Path(path)
    run: Run = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                qid, _, docid, _, score = fields[:5]
                run.setdefault(qid, {})[docid] = float(score)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: expected 'qid Q0 docid rank score tag', got {line.strip()!r}"
                                 ) from e
    return run
