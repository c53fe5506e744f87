"""Negatives files: `qid<TAB>pid pid ...` TSV or JSONL `{"qid": ..., "negatives": [...]}`."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from dr.data.errors import ReadPolicy
from dr.data.lines import read_jsonl, read_tsv
from dr.data.sources import RetrievalSet
from dr.negatives import Negatives


def read_negatives(path: str | Path, policy: ReadPolicy) -> tuple[Negatives, dict[str, int]]:
    """`({qid: [pid, ...]}, {qid: line})`; the format is chosen by the suffix (.jsonl / .json -> JSONL)."""
    path = Path(path)
    out: Negatives = {}
    lines: dict[str, int] = {}
    if path.suffix in (".jsonl", ".json"):
        rows = ((n, obj.get("qid"), obj.get("negatives")) for n, obj in read_jsonl(path, policy))
    else:
        rows = ((n, f[0].strip(), f[1].split()) for n, f in read_tsv(path, policy, (2,)))
    for number, qid, negs in rows:
        if qid is None or not isinstance(negs, list) or not all(isinstance(x, (str, int)) for x in negs):
            policy.bad(path, number, "malformed line: expected a qid and a list of passage ids")
        elif str(qid) in out:
            policy.bad(path, number, f"duplicate id {str(qid)!r}")
        else:
            out[str(qid)] = [str(x) for x in negs]
            lines[str(qid)] = number
    return out, lines


def write_negatives(path: str | Path, negatives: Negatives) -> None:
    """TSV `qid<TAB>pid pid ...`, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for qid, negs in negatives.items():
            f.write(f"{qid}\t{' '.join(negs)}\n")
    os.replace(tmp, path)


@dataclass
class FileNegatives:
    """Negatives from a file. Unknown passage ids and positives listed as negatives are errors
    (or counted skips with `strict: false`)."""

    path: str
    strict: bool = True

    def negatives(self, train_set: RetrievalSet, qids: list[str]) -> Negatives:
        policy = ReadPolicy(strict=self.strict)
        table, lines = read_negatives(self.path, policy)
        out: Negatives = {}
        for qid in qids:
            kept = []
            for pid in table.get(qid, []):
                if pid not in train_set.corpus:
                    policy.bad(self.path, lines[qid], f"passage id {pid!r} is not in {train_set.corpus.source}")
                elif train_set.qrels[qid].get(pid, 0) > 0:
                    policy.bad(self.path, lines[qid], f"passage {pid!r} is a positive of query {qid!r}")
                else:
                    kept.append(pid)
            out[qid] = kept
        policy.report()
        return out
