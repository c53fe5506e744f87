"""MS MARCO passage files: collection.tsv, queries.*.tsv (also TREC topics), text and id triples."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from dr.data.beir import _add_query
from dr.data.errors import ReadPolicy
from dr.data.lines import _open_binary, read_lines, read_tsv

CollectionLayout = Literal["auto", "pid_text", "pid_title_text"]
_FIELDS = {"pid_text": (2, "(pid, text)"), "pid_title_text": (3, "(pid, title, text)")}


def read_collection(path: str | Path, policy: ReadPolicy,
                    layout: CollectionLayout = "auto") -> Iterator[tuple[int, str, str, str]]:
    """Yield `(line, pid, title, text)` from a file of `pid<TAB>text` or `pid<TAB>title<TAB>text` rows.

    A file has one layout: `layout` declares it, or `auto` detects it from the whole file. A row with
    another number of fields (a stray tab in a passage, a missing title) is a bad record at its line,
    never a title.
    """
    if layout not in ("auto", *_FIELDS):
        raise ValueError(f"{path}: layout must be auto, pid_text or pid_title_text, got {layout!r}")
    if layout == "auto":
        layout = detect_collection_layout(path)
    want, names = _FIELDS[layout]
    for number, text in read_lines(path, policy):
        fields = text.split("\t")
        if len(fields) != want:
            policy.bad(path, number, f"malformed line: expected {want} tab-separated fields {names}, got {len(fields)}")
            continue
        pid = fields[0].strip()
        title, text = (fields[1], fields[2]) if want == 3 else ("", fields[1])
        if not pid:
            policy.bad(path, number, "malformed line: empty id")
        elif not (title.strip() or text.strip()):
            policy.bad(path, number, f"empty text for id {pid!r}")
        else:
            yield number, pid, title, text


def detect_collection_layout(path: str | Path) -> CollectionLayout:
    """`pid_title_text` when 3-field rows outnumber 2-field rows over the whole file, else `pid_text`.

    A first pass over the whole file, not the first row: deciding from row 1 would turn a single odd
    first row (a stray tab) into millions of "bad" rows, or in lenient mode silently drop nearly the whole
    collection. Counting every row makes the odd rows the minority that gets reported, wherever they
    are. The pass only counts tab bytes (no decoding, nothing kept), so memory stays constant on the
    8.8M-line MS MARCO collection, and it runs only when the corpus cache is built. Ties go to
    `pid_text`, MS MARCO's own layout.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    counts: Counter[int] = Counter()
    with _open_binary(path) as f:
        for raw in f:
            if raw.strip():
                counts[raw.count(b"\t") + 1] += 1
    return "pid_title_text" if counts[3] > counts[2] else "pid_text"


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
