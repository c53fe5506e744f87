"""Negatives files: `qid<TAB>pid pid ...` TSV or JSONL `{"qid": ..., "negatives": [...]}`."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dr.data.errors import DataFormatError, ReadPolicy
from dr.data.lines import read_jsonl, read_tsv
from dr.data.sources import RetrievalSet
from dr.negatives import Negatives

logger = logging.getLogger(__name__)
_SHOWN = 5  # ids quoted in a message: enough to see a format mismatch, short enough to read


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
        _check_query_ids(self.path, table, train_set, qids)
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


def _check_query_ids(path: str, table: Negatives, train_set: RetrievalSet, qids: list[str]) -> None:
    """No file query id among the training queries is an error: training would silently fall back to
    random negatives. A partial match is a warning with the counts.

    Ids of queries held out for dev (in `train_set` but not in `qids`) are not counted as unmatched:
    `dr.mine` writes negatives for every training-set query.
    """
    if not table:
        raise DataFormatError(path, None, "no negatives: the file holds no query id")
    wanted = set(qids)
    if not any(q in wanted for q in table):
        raise DataFormatError(path, None, f"none of its {len(table)} query ids is one of the {len(qids)} training "
                                          f"queries of {train_set.name}: the file has {_few(table)}, the training "
                                          f"set {_few(qids)}")
    unknown = [q for q in table if q not in train_set.queries]
    uncovered = sum(q not in table for q in qids)
    if unknown or uncovered:
        logger.warning("%s: %d of %d query ids are not training queries of %s%s; %d of %d training queries have "
                       "no entry (they get random negatives)", path, len(unknown), len(table), train_set.name,
                       f" ({_few(unknown)})" if unknown else "", uncovered, len(qids))


def _few(ids) -> str:
    ids = list(ids)
    shown = ", ".join(repr(q) for q in ids[:_SHOWN])
    return f"{shown}, ..." if len(ids) > _SHOWN else shown
