"""BEIR folders: corpus.jsonl (`_id`, `title`, `text`), queries.jsonl (`_id`, `text`), qrels/{split}.tsv."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dr.data.errors import ReadPolicy
from dr.data.lines import read_jsonl


def read_beir_corpus(path: str | Path, policy: ReadPolicy) -> Iterator[tuple[int, str, str, str]]:
    """Yield `(line, id, title, text)`; a record without `_id` or with empty title and text is bad."""
    for number, obj in read_jsonl(path, policy):
        docid = obj.get("_id")
        if docid is None or str(docid) == "":
            policy.bad(path, number, "malformed line: missing '_id'")
            continue
        title = str(obj.get("title") or "")
        text = str(obj.get("text") or "")
        if not (title.strip() or text.strip()):
            policy.bad(path, number, f"empty text for id {docid!r}")
            continue
        yield number, str(docid), title, text


def read_beir_queries(path: str | Path, policy: ReadPolicy) -> dict[str, str]:
    """`{qid: text}` from queries.jsonl; duplicate ids and empty texts are bad."""
    queries: dict[str, str] = {}
    for number, obj in read_jsonl(path, policy):
        qid, text = obj.get("_id"), obj.get("text")
        if qid is None or text is None:
            policy.bad(path, number, "malformed line: query needs '_id' and 'text'")
            continue
        _add_query(queries, str(qid), str(text), path, number, policy)
    return queries


def _add_query(queries: dict[str, str], qid: str, text: str, path: str | Path, number: int, policy: ReadPolicy) -> None:
    if not text.strip():
        policy.bad(path, number, f"empty text for query {qid!r}")
    elif qid in queries:
        policy.bad(path, number, f"duplicate id {qid!r}")
    else:
        queries[qid] = text
