"""Runs as `{qid: {docid: score}}`, built from index results and written as TREC run files."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

Run = dict[str, dict[str, float]]


def run_from_search(qids: Sequence[str], scores: np.ndarray, rows: np.ndarray, docids: np.ndarray) -> Run:
    """(Q, k) scores and row ids from an index -> run; rows of -1 (fewer hits than k) are dropped."""
    run: Run = {}
    for qid, s, r in zip(qids, scores, rows):
        keep = r >= 0
        run[qid] = dict(zip(docids[r[keep]].tolist(), s[keep].astype(float).tolist()))
    return run


def write_trec_run(run: Run, path: str | Path, tag: str) -> None:
    """`qid Q0 docid rank score tag`, best first, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (docid, score) in enumerate(ranked, start=1):
                f.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
    os.replace(tmp, path)


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
