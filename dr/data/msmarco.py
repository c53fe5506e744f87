"""MS MARCO passage files: collection.tsv, queries.*.tsv (also TREC topics), text and id triples."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dr.data.beir import _add_query
from dr.data.errors import ReadPolicy
from dr.data.lines import read_tsv


def read_collection(path: str | Path, policy: ReadPolicy) -> Iterator[tuple[int, str, str, str]]:
    """Yield `(line, pid, title, text)` from `pid<TAB>text` or `pid<TAB>title<TAB>text` rows."""
    for number, fields in read_tsv(path, policy, (2, 3)):
        pid = fields[0].strip()
        title, text = (fields[1], fields[2]) if len(fields) == 3 else ("", fields[1])
        if not pid:
            policy.bad(path, number, "malformed line: empty id")
        elif not (title.strip() or text.strip()):
            policy.bad(path, number, f"empty text for id {pid!r}")
        else:
            yield number, pid, title, text


def read_queries_tsv(path: str | Path, policy: ReadPolicy) -> dict[str, str]:
    """`{qid: text}` from `qid<TAB>text` rows (MS MARCO queries and TREC DL topics)."""
    queries: dict[str, str] = {}
    for number, fields in read_tsv(path, policy, (2,)):
        qid = fields[0].strip()
        if not qid:
            policy.bad(path, number, "malformed line: empty id")
            continue
        _add_query(queries, qid, fields[1], path, number, policy)
    return queries


def read_text_triples(path: str | Path, policy: ReadPolicy) -> Iterator[tuple[str, str, str]]:
    """Yield `(query, positive, negative)` texts from triples.train.small-format rows."""
    for number, fields in read_tsv(path, policy, (3,)):
        if not all(f.strip() for f in fields):
            policy.bad(path, number, "empty text in triple")
            continue
        yield fields[0], fields[1], fields[2]


def read_id_triples(path: str | Path, policy: ReadPolicy) -> Iterator[tuple[str, str, str]]:
    """Yield `(qid, pos_pid, neg_pid)` from `qid<TAB>pos<TAB>neg` rows (qidpidtriples format)."""
    for number, fields in read_tsv(path, policy, (3,)):
        ids = [f.strip() for f in fields]
        if not all(ids) or any(" " in i for i in ids):
            policy.bad(path, number, "malformed line: expected three ids")
            continue
        yield ids[0], ids[1], ids[2]
