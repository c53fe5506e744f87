"""Relevance judgements in the formats in use: TREC 4-column (`qid iter docid grade`, space or tab),
MS MARCO 2/3-column TSV (`qid pid` or `qid pid grade`) and BEIR TSV with a `query-id` header."""
from __future__ import annotations

import re
from pathlib import Path

from dr.data.errors import ReadPolicy
from dr.data.lines import read_lines
from dr.types import Qrels


def read_qrels(path: str | Path, policy: ReadPolicy, lines: dict[tuple[str, str], int] | None = None) -> Qrels:
    """`{qid: {docid: grade}}`. The column count is taken per line; a repeated pair is bad.
    With `lines`, the line of each `(qid, docid)` is recorded there (for later errors that name it)."""
    qrels: Qrels = {}
    for number, text in read_lines(path, policy):
        # ids never hold whitespace and TREC files mix spaces and tabs; a leading separator leaves an
        # empty first field, reported below as an empty id rather than shifting the columns
        fields = re.split(r"\s+", text.rstrip())
        if number == 1 and fields and fields[0].lower() in {"query-id", "qid", "query_id"}:
            continue  # header row (BEIR)
        if len(fields) == 4:
            qid, docid, grade_text = fields[0], fields[2], fields[3]
        elif len(fields) == 3:
            qid, docid, grade_text = fields
        elif len(fields) == 2:
            qid, docid, grade_text = fields[0], fields[1], "1"
        else:
            policy.bad(path, number, f"malformed line: expected 2, 3 or 4 columns, got {len(fields)}")
            continue
        try:
            grade = int(float(grade_text))
        except ValueError:
            policy.bad(path, number, f"malformed line: relevance {grade_text!r} is not a number")
            continue
        if not qid or not docid:
            policy.bad(path, number, "malformed line: empty id")
        elif docid in qrels.get(qid, {}):
            policy.bad(path, number, f"duplicate judgement for ({qid!r}, {docid!r})")
        else:
            qrels.setdefault(qid, {})[docid] = grade
            if lines is not None:
                lines[(qid, docid)] = number
    return qrels
