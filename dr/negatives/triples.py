"""negatives=triples: MS MARCO training triples as the negatives of each training query.

Two files of the MS MARCO passage task are read:

- `qidpidtriples.train.full.2.tsv`: `qid<TAB>pid_pos<TAB>pid_neg` (about 400M lines);
- `triples.train.small.tsv`: `query text<TAB>positive text<TAB>negative text` (no ids).

The file is streamed (pyarrow batches; only rows of training queries whose list is not yet full reach
Python), and each query keeps its first `max_per_query` distinct negatives: nothing proportional to the
file is held. The positive of each triple must be a judged positive of its query and the negative must
not be one; passages must be in the training corpus. Bad rows name file:line (strict) or are counted and
skipped (lenient). A row that pyarrow cannot take as clean (a malformed line, an empty field) makes the
whole file go through the line reader instead, which names the line.

Text triples are resolved to ids by looking the texts up in the training set, not by hashing them into
new ids: the queries by their exact text among the training queries, the passages by their exact text in
the collection (a hash index over the corpus, every hit compared in full). Negatives must be passages of
the corpus the model encodes and the miner and evaluation share; ids made up from hashes would be passages
outside it. A query text shared by several training queries goes to the one whose judged positive the
triple's positive is.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from dr.data.corpus import CorpusStore
from dr.data.errors import DataFormatError, ReadPolicy
from dr.data.lines import read_tsv
from dr.data.sources import RetrievalSet
from dr.types import Negatives

logger = logging.getLogger(__name__)
TriplesFormat = Literal["auto", "ids", "texts"]
Batch = tuple[np.ndarray, list[str], list[str], list[str]]  # (lines, first, second, third column)
_BATCH_ROWS = 100_000  # rows a line-by-line batch holds


class _NotClean(Exception):
    """The fast reader met a row it cannot take as is: the line reader reads the file instead."""


@dataclass
class TriplesNegatives:
    """`format`: `ids` (qidpidtriples), `texts` (triples.train.small) or `auto` (ids when the first line's
    three fields are free of spaces). `max_per_query`: distinct negatives kept per query, first in file order."""

    path: str
    format: TriplesFormat = "auto"
    max_per_query: int = 30
    strict: bool = True

    def __post_init__(self) -> None:
        if self.format not in ("auto", "ids", "texts"):
            raise ValueError(f"negatives.format must be auto, ids or texts, got {self.format!r}")
        if self.max_per_query < 1:
            raise ValueError(f"negatives.max_per_query must be >= 1, got {self.max_per_query}")

    def negatives(self, train_set: RetrievalSet, qids: list[str]) -> Negatives:
        path = Path(self.path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        fmt = self.format if self.format != "auto" else _sniff(path)
        resolver = _Resolver(train_set, fmt)
        for source in (_fast_batches, _line_batches):
            policy = ReadPolicy(strict=self.strict)
            grouping = _Grouping(path, train_set, qids, resolver, self.max_per_query, policy)
            try:
                for batch in source(path, fmt, policy):
                    grouping.add(batch)
            except _NotClean as e:
                logger.info("%s: reading line by line (%s)", path, e)
                continue
            break
        policy.report()
        return grouping.result()


def _sniff(path: Path) -> str:
    for _, fields in read_tsv(path, ReadPolicy(strict=False), (3,)):
        return "ids" if not any(" " in f.strip() for f in fields) else "texts"
    raise DataFormatError(path, None, "no triples in the file")


def _fast_batches(path: Path, fmt: str, policy: ReadPolicy) -> Iterator[Batch]:
    """Batches parsed by pyarrow. Empty lines are rows here (ignore_empty_lines=False), so row i is line
    i + 1 and errors found later still name the right line; any irregular row raises `_NotClean`."""
    names = ["a", "b", "c"]
    try:
        reader = pacsv.open_csv(
            path, read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False, escape_char=False,
                                             newlines_in_values=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in names}, null_values=[],
                                                 strings_can_be_null=False))
        line = 1
        for batch in reader:
            columns = [pc.utf8_trim_whitespace(batch.column(c)) if fmt == "ids" else batch.column(c) for c in names]
            for column in columns:
                if pc.any(pc.equal(pc.binary_length(pc.utf8_trim_whitespace(column)), 0)).as_py():
                    raise _NotClean("an empty field")
                if fmt == "ids" and pc.any(pc.match_substring(column, " ")).as_py():
                    raise _NotClean("an id with a space")
            yield (np.arange(line, line + batch.num_rows), *[c.to_pylist() for c in columns])
            line += batch.num_rows
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise _NotClean(str(e).splitlines()[0][:200]) from e


def _line_batches(path: Path, fmt: str, policy: ReadPolicy) -> Iterator[Batch]:
    """The reference reader: every bad line is reported at its number."""
    rows: list[tuple[int, str, str, str]] = []
    for number, fields in read_tsv(path, policy, (3,)):
        if fmt == "ids":
            fields = [f.strip() for f in fields]
            if not all(fields) or any(" " in f for f in fields):
                policy.bad(path, number, "malformed line: expected three ids")
                continue
        elif not all(f.strip() for f in fields):
            policy.bad(path, number, "empty text in triple")
            continue
        rows.append((number, *fields))
        if len(rows) == _BATCH_ROWS:
            yield _columns(rows)
            rows = []
    if rows:
        yield _columns(rows)


def _columns(rows: list[tuple[int, str, str, str]]) -> Batch:
    lines, a, b, c = zip(*rows)
    return np.array(lines), list(a), list(b), list(c)


class _Resolver:
    """Query and passage ids of a triple's fields: the ids themselves, or looked up by text."""

    def __init__(self, train_set: RetrievalSet, fmt: str) -> None:
        self.fmt, self.corpus = fmt, train_set.corpus
        self.query_keys: dict[str, list[str]] = {}  # the first field's value -> training query ids
        for qid, text in train_set.queries.items():
            self.query_keys.setdefault(qid if fmt == "ids" else text, []).append(qid)
        self._texts = _TextIndex(train_set.corpus) if fmt == "texts" else None

    def passages(self, value: str) -> list[str]:
        """Corpus ids the field names (several when a text occurs more than once), or []."""
        if self.fmt == "ids":
            return [value] if value in self.corpus else []
        return self._texts.find(value)


class _TextIndex:
    """Exact passage text -> ids, through a sorted array of 64-bit hashes of every corpus text."""

    def __init__(self, corpus: CorpusStore, chunk: int = 100_000) -> None:
        self.corpus = corpus
        rows = corpus.active_rows
        hashes = np.concatenate([np.array([hash(t) for t in corpus.texts(rows[i : i + chunk])], dtype=np.int64)
                                 for i in range(0, len(rows), chunk)]) if len(rows) else np.zeros(0, np.int64)
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.rows = hashes[order], np.asarray(rows)[order]

    def find(self, text: str) -> list[str]:
        h = hash(text)
        a, b = np.searchsorted(self.hashes, h), np.searchsorted(self.hashes, h, side="right")
        if a == b:
            return []
        rows = self.rows[a:b]
        return [str(self.corpus.ids[r]) for r, t in zip(rows, self.corpus.texts(rows)) if t == text]


class _Grouping:
    """Per training query, its first `cap` distinct valid negatives, fed one batch at a time."""

    def __init__(self, path: Path, train_set: RetrievalSet, qids: list[str], resolver: _Resolver, cap: int,
                 policy: ReadPolicy) -> None:
        self.path, self.train_set, self.qids, self.resolver = path, train_set, qids, resolver
        self.cap, self.policy = cap, policy
        self.negs: dict[str, dict[str, None]] = {q: {} for q in qids}
        wanted = set(qids)
        self.wanted_keys = pa.array(sorted({k for k, qs in resolver.query_keys.items() if wanted & set(qs)}),
                                    type=pa.string())
        self.known_keys = pa.array(list(resolver.query_keys), type=pa.string())
        self.full: set[str] = set()  # first-field values whose query has its `cap` negatives: skipped early
        self.rows = self.matched_rows = 0
        self.unknown: dict[str, None] = {}  # first-field values that are no training query (a few are quoted)

    def add(self, batch: Batch) -> None:
        lines, first, second, third = batch
        keys = pa.array(first, type=pa.string())
        self.rows += len(first)
        self._count_unknown(keys, first)
        mask = pc.is_in(keys, value_set=self.wanted_keys)
        if self.full:
            mask = pc.and_(mask, pc.invert(pc.is_in(keys, value_set=pa.array(sorted(self.full), type=pa.string()))))
        for i in np.flatnonzero(mask.to_numpy(zero_copy_only=False)).tolist():
            self.matched_rows += 1
            self._row(int(lines[i]), first[i], second[i], third[i])

    def _count_unknown(self, keys: pa.Array, first: list[str]) -> None:
        known = pc.is_in(keys, value_set=self.known_keys).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(~known).tolist():
            self.unknown.setdefault(first[i], None)

    def _row(self, line: int, key: str, pos_field: str, neg_field: str) -> None:
        candidates = [q for q in self.resolver.query_keys[key] if q in self.negs]
        pos_ids = self.resolver.passages(pos_field)
        where = (f"passage id {pos_field!r}" if self.resolver.fmt == "ids"
                 else f"positive text {_short(pos_field)!r}")
        if not pos_ids:
            return self.policy.bad(self.path, line, f"{where} is not in {self.train_set.corpus.source}")
        judged = [(q, p) for q in candidates for p in pos_ids if self.train_set.qrels[q].get(p, 0) > 0]
        if not judged:
            return self.policy.bad(self.path, line, f"passage {pos_ids[0]!r} is not a judged positive of query "
                                                    f"{candidates[0]!r}")
        qid = judged[0][0]
        neg_ids = self.resolver.passages(neg_field)
        if not neg_ids:
            where = (f"passage id {neg_field!r}" if self.resolver.fmt == "ids"
                     else f"negative text {_short(neg_field)!r}")
            return self.policy.bad(self.path, line, f"{where} is not in {self.train_set.corpus.source}")
        neg = neg_ids[0]
        if self.train_set.qrels[qid].get(neg, 0) > 0:
            return self.policy.bad(self.path, line, f"passage {neg!r} is a positive of query {qid!r}")
        kept = self.negs[qid]
        if len(kept) < self.cap:
            kept.setdefault(neg, None)
            if len(kept) == self.cap and len(self.resolver.query_keys[key]) == 1:
                self.full.add(key)
        return None

    def result(self) -> Negatives:
        if self.rows == 0:
            raise DataFormatError(self.path, None, "no triples in the file")
        if self.matched_rows == 0:
            shown = ", ".join(repr(_short(k)) for k in list(self.unknown)[:5])
            raise DataFormatError(self.path, None, f"none of its queries is one of the {len(self.qids)} training "
                                                   f"queries of {self.train_set.name} (the file has {shown})")
        out = {q: list(found) for q, found in self.negs.items()}
        missing = sum(not v for v in out.values())
        if self.unknown or missing:
            logger.warning("%s: %d query value(s) are no training query of %s; %d of %d training queries have no "
                           "negative from it (they get random negatives)", self.path, len(self.unknown),
                           self.train_set.name, missing, len(self.qids))
        logger.info("triples negatives from %s: %d queries, %.1f per query", self.path, len(out),
                    float(np.mean([len(v) for v in out.values()])) if out else 0.0)
        return out


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
