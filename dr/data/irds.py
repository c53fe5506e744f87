"""ir_datasets ids (`msmarco-passage/dev/small`, `beir/scifact/train`, ...) for users who are online.

ir_datasets downloads and caches its files on first use; nothing here touches the network by itself.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator

from dr.data.errors import ReadPolicy
from dr.types import Qrels


def irds_parts(dataset_id: str, policy: ReadPolicy) -> tuple[Iterator[tuple[int, str, str, str]], str, dict[str, str], Qrels]:
    """`(docs, fingerprint, queries, qrels)` of an ir_datasets id; docs yield `(index, id, title, text)`."""
    try:
        import ir_datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("ir_datasets ids need the `ir_datasets` package: pip install 'dr[irds]'") from e
    ds = ir_datasets.load(dataset_id)
    where = f"irds:{dataset_id}"
    queries: dict[str, str] = {}
    for i, q in enumerate(ds.queries_iter(), start=1):
        text = getattr(q, "text", None) or getattr(q, "title", "")
        if not str(text).strip():
            policy.bad(where, i, f"empty text for query {q.query_id!r}")
        elif q.query_id in queries:
            policy.bad(where, i, f"duplicate id {q.query_id!r}")
        else:
            queries[q.query_id] = str(text)
    qrels: Qrels = {}
    for i, r in enumerate(ds.qrels_iter(), start=1):
        if r.doc_id in qrels.get(r.query_id, {}):
            policy.bad(where, i, f"duplicate judgement for ({r.query_id!r}, {r.doc_id!r})")
        else:
            qrels.setdefault(r.query_id, {})[r.doc_id] = int(r.relevance)
    # keyed by the documents' namespace, so train/dev/test ids of one collection share one Arrow copy
    # and one set of cached embeddings; a dataset without a namespace (None) is keyed by its own id, or
    # every such dataset would share (and load) one cached corpus
    namespace = (ds.docs_namespace() if hasattr(ds, "docs_namespace") else None) or dataset_id
    fingerprint = hashlib.sha1(f"irds:{namespace}:{ir_datasets.__version__}".encode()).hexdigest()[:20]
    return _docs(ds, where, policy), fingerprint, queries, qrels


def _docs(ds, where: str, policy: ReadPolicy) -> Iterator[tuple[int, str, str, str]]:
    for i, d in enumerate(ds.docs_iter(), start=1):
        title = str(getattr(d, "title", "") or "")
        text = str(getattr(d, "text", "") or "")
        if not (title.strip() or text.strip()):
            policy.bad(where, i, f"empty text for id {d.doc_id!r}")
            continue
        yield i, d.doc_id, title, text
