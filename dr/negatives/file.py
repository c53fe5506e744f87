"""Negatives files: `qid<TAB>pid pid ...` TSV or JSONL `{"qid": ..., "negatives": [...]}`.

`read_negatives` is the exact line reader (small files, checkpoints); `FileNegatives` prepares a large file
once into a memory-mapped table (`dr.data.id_lists`) shared by every process and later run.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dr.data.errors import DataFormatError, ReadPolicy
from dr.data.id_lists import IdLists, arrays_from_lists, decode, read_tsv_fast
from dr.data.lines import read_jsonl, read_tsv
from dr.data.prepared import (
    cache_root,
    encode_ids,
    file_key,
    find_ids,
    prepare_once,
    read_json,
    save_arrays,
    write_json,
)
from dr.data.sources import RetrievalSet
from dr.io import atomic_open
from dr.types import Negatives

logger = logging.getLogger(__name__)
_SHOWN = 5  # ids quoted in a message: enough to see a format mismatch, short enough to read
_READER_VERSION = 1  # bump when what a prepared table holds changes


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
    with atomic_open(path) as f:
        for qid, negs in negatives.items():
            f.write(f"{qid}\t{' '.join(negs)}\n")


@dataclass
class FileNegatives:
    """Negatives from a file. Unknown passage ids and positives listed as negatives are errors
    (or counted skips with `strict: false`).

    The file is prepared once into a memory-mapped `qid -> [pid]` table under the dr cache (keyed by the
    file's path, size and mtime), shared by every process and later run; the negatives handed out are a
    read-only mapping over it, so MS MARCO-size files never become a dict of lists of strings.
    """

    path: str
    strict: bool = True
    cache_dir: str | None = None

    def table(self, policy: ReadPolicy) -> IdLists:
        return prepare_negatives(self.path, policy, self.cache_dir)

    def negatives(self, train_set: RetrievalSet, qids: list[str]) -> Negatives:
        policy = ReadPolicy(strict=self.strict)
        table = self.table(policy)
        _check_query_ids(self.path, table, train_set, qids)
        keep = checked_items(table, train_set, qids, policy, self.path)
        policy.report()
        return ListedNegatives(table, qids, keep)


class ListedNegatives(Mapping):
    """`{qid: [pid, ...]}` for the training queries over a prepared table (an empty list for a query the
    file does not list); `keep` masks the items dropped by a lenient check. Each list is built when read."""

    def __init__(self, table: IdLists, qids: list[str], keep: np.ndarray | None) -> None:
        self.table, self.qids, self.keep = table, list(qids), keep
        self._wanted = set(self.qids)

    def __getitem__(self, qid: str) -> list[str]:
        if qid not in self._wanted:
            raise KeyError(qid)
        code = self.table.code(qid)
        if code < 0:
            return []
        a, b = int(self.table.start[code]), int(self.table.start[code + 1])
        items = self.table.items[a:b]
        if self.keep is not None:
            items = items[self.keep[a:b]]
        return decode(self.table.pids[items])

    def __iter__(self) -> Iterator[str]:
        return iter(self.qids)

    def __len__(self) -> int:
        return len(self.qids)


def prepare_negatives(path: str | Path, policy: ReadPolicy, cache_dir: str | Path | None = None) -> IdLists:
    """The file's prepared table: built on first use (a clean TSV parsed by pyarrow, anything else line by
    line with `read_negatives`, which names bad lines), then mapped; lenient skips are counted again."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    key = file_key(path, "negatives", f"strict={policy.strict}", _READER_VERSION)

    def build(directory: Path) -> None:
        before = Counter(policy.skipped)
        fast = read_tsv_fast(path) if path.suffix not in (".jsonl", ".json") else "JSONL"
        if isinstance(fast, str):
            logger.info("%s: reading line by line (%s)", path, fast)
            lists, lines = read_negatives(path, policy)
            fast = arrays_from_lists(lists, lines)
        save_arrays(directory, fast)
        write_json(directory / "meta.json", {"source": str(path), "skipped": dict(policy.skipped - before)})

    directory, built = prepare_once(cache_root(cache_dir) / "negatives" / key, build, f"negatives {path}")
    if not built:
        policy.skipped.update(read_json(directory / "meta.json")["skipped"])
    return IdLists.load(directory)


def checked_items(table: IdLists, train_set: RetrievalSet, qids: list[str], policy: ReadPolicy,
                  path: str | Path, chunk: int = 50_000) -> np.ndarray | None:
    """Which of the table's items may be used: passages in the corpus and not positives of their query.

    Vectorized over `chunk` queries at a time (bounded memory at MS MARCO size); a bad item is reported at
    its query's line in `qids` order, then file order (strict: the first raises). None when all are good.
    """
    known = _known_passages(table, train_set)
    keep: np.ndarray | None = None
    for start in range(0, len(qids), chunk):
        part = qids[start : start + chunk]
        items, which = table.items_of(part)  # positions in table.items, index into `part` of each
        codes = table.items[items]
        unknown = ~known[codes]
        positive = np.isin(which.astype(np.int64) * len(table.pids) + codes, _positive_keys(table, train_set, part))
        for at in np.flatnonzero(unknown | positive).tolist():
            qid, pid = part[int(which[at])], decode(table.pids[codes[at : at + 1]])[0]
            if unknown[at]:
                policy.bad(path, table.line_of(qid), f"passage id {pid!r} is not in {train_set.corpus.source}")
            else:
                policy.bad(path, table.line_of(qid), f"passage {pid!r} is a positive of query {qid!r}")
            keep = np.ones(len(table.items), dtype=bool) if keep is None else keep
            keep[items[at]] = False
    return keep


def _known_passages(table: IdLists, train_set: RetrievalSet) -> np.ndarray:
    """(P,) bool over the table's passage ids: in the training corpus."""
    ids = decode(table.pids)
    corpus = train_set.corpus
    return corpus.contains(ids) if hasattr(corpus, "contains") else np.array([p in corpus for p in ids], dtype=bool)


def _positive_keys(table: IdLists, train_set: RetrievalSet, qids: list[str]) -> np.ndarray:
    """Sorted `index in qids * P + passage code` of each judged positive the table's passages include."""
    keys = []
    for i, qid in enumerate(qids):
        found = [p for p, g in train_set.qrels.get(qid, {}).items() if g > 0]
        if found:
            pos, hit = find_ids(table.pids, encode_ids(found))
            keys.extend((i * len(table.pids) + pos[hit]).tolist())
    return np.sort(np.array(keys, dtype=np.int64))


def _check_query_ids(path: str, table: IdLists, train_set: RetrievalSet, qids: list[str]) -> None:
    """No file query id among the training queries is an error: training would silently fall back to
    random negatives. A partial match is a warning with the counts.

    Ids of queries held out for dev (in `train_set` but not in `qids`) are not counted as unmatched:
    `dr.mine` writes negatives for every training-set query.
    """
    if not len(table):
        raise DataFormatError(path, None, "no negatives: the file holds no query id")
    listed = _file_order(table)
    in_file = set(listed)
    if not any(q in in_file for q in qids):
        raise DataFormatError(path, None, f"none of its {len(listed)} query ids is one of the {len(qids)} training "
                                          f"queries of {train_set.name}: the file has {_few(listed)}, "
                                          f"the training set {_few(qids)}")
    unknown = [q for q in listed if q not in train_set.queries]
    uncovered = sum(q not in in_file for q in qids)
    if unknown or uncovered:
        logger.warning("%s: %d of %d query ids are not training queries of %s%s; %d of %d training queries have "
                       "no entry (they get random negatives)", path, len(unknown), len(listed), train_set.name,
                       f" ({_few(unknown)})" if unknown else "", uncovered, len(qids))


def _file_order(table: IdLists) -> list[str]:
    """Query ids in the order the file lists them (messages quote the first few as the file shows them)."""
    ids = table.query_ids()
    return [ids[i] for i in np.argsort(table.line, kind="stable").tolist()]


def _few(ids) -> str:
    ids = list(ids)
    shown = ", ".join(repr(q) for q in ids[:_SHOWN])
    return f"{shown}, ..." if len(ids) > _SHOWN else shown
