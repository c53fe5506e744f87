"""Per-query measure values on disk: `perquery/<set>.tsv` with a `qid<TAB>measure<TAB>value` header.

The evaluator writes them at the final evaluation; `dr.compare` reads them for paired significance tests.
"""
from __future__ import annotations

from pathlib import Path

from dr.io import atomic_open

PerQuery = dict[str, dict[str, float]]  # {measure: {qid: value}}
HEADER = "qid\tmeasure\tvalue"


def write_per_query(values: PerQuery, path: str | Path) -> None:
    """One line per (query, measure), written atomically."""
    with atomic_open(path) as f:
        f.write(HEADER + "\n")
        for measure, by_qid in values.items():
            for qid, value in by_qid.items():
                f.write(f"{qid}\t{measure}\t{value!r}\n")


def read_per_query(path: str | Path) -> PerQuery:
    """`{measure: {qid: value}}`; a malformed line raises ValueError naming the file and line."""
    path = Path(path)
    values: PerQuery = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if lineno == 1 and line == HEADER or not line:
                continue
            parts = line.split("\t")
            try:
                qid, measure, value = parts
                values.setdefault(measure, {})[qid] = float(value)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: expected 'qid<TAB>measure<TAB>value', got {line!r}") from e
    return values
