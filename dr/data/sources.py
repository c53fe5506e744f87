"""Retrieval sets (corpus + queries + qrels) assembled from files or ir_datasets, and validated.

Each builder here is a `_target_` for `configs/data/*.yaml`. Validation follows the same rule
everywhere: in strict mode the first problem raises `DataFormatError` naming file and line; in
lenient mode the record is skipped, counted and logged.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dr.data.beir import read_beir_corpus, read_beir_queries
from dr.data.corpus import CorpusStore, shared_store, source_fingerprint
from dr.data.errors import ReadPolicy
from dr.data.msmarco import CollectionLayout, read_collection, read_queries_tsv
from dr.data.qrels import read_qrels
from dr.types import Qrels

logger = logging.getLogger(__name__)

MissingDocs = Literal["error", "keep"]


@dataclass
class RetrievalSet:
    """A named evaluation or training set. `queries` holds only the queries that have qrels.

    `rel_level` is the lowest grade counted relevant by binary measures (2 for TREC DL).
    """

    name: str
    corpus: CorpusStore
    queries: dict[str, str]
    qrels: Qrels
    rel_level: int = 1

    def positives(self, qid: str) -> list[str]:
        """Passages judged relevant (grade >= rel_level) to `qid` that are in the corpus, sorted."""
        return sorted(d for d, g in self.qrels[qid].items() if g >= self.rel_level and d in self.corpus)

    def __repr__(self) -> str:
        return f"RetrievalSet({self.name!r}, {len(self.corpus)} passages, {len(self.queries)} queries)"


def beir_set(
    name: str,
    root: str,
    split: str,
    rel_level: int = 1,
    strict: bool = True,
    missing_docs: MissingDocs = "error",
    cache_dir: str | None = None,
) -> RetrievalSet:
    """A BEIR folder `root` with corpus.jsonl, queries.jsonl and qrels/{split}.tsv."""
    base = Path(root)
    policy = ReadPolicy(strict=strict)
    corpus_path = base / "corpus.jsonl"
    corpus = shared_store(
        read_beir_corpus(corpus_path, policy), corpus_path,
        source_fingerprint([corpus_path], f"beir-corpus-strict={strict}"), policy, cache_dir,
    )
    queries = read_beir_queries(base / "queries.jsonl", policy)
    lines: dict[tuple[str, str], int] = {}
    qrels = read_qrels(base / "qrels" / f"{split}.tsv", policy, lines)
    return _assemble(name, corpus, queries, base / "queries.jsonl", qrels, base / "qrels" / f"{split}.tsv",
                     rel_level, missing_docs, policy, lines)


def msmarco_set(
    name: str,
    collection: str,
    queries: str,
    qrels: str,
    rel_level: int = 1,
    strict: bool = True,
    missing_docs: MissingDocs = "error",
    cache_dir: str | None = None,
    layout: CollectionLayout = "auto",
) -> RetrievalSet:
    """MS MARCO / TREC files: `pid<TAB>text` collection, `qid<TAB>text` queries, qrels in any supported form.

    `layout`: the collection's columns, `pid_text`, `pid_title_text`, or `auto` (detected from the whole
    file; a row with another column count is a bad record).
    """
    policy = ReadPolicy(strict=strict)
    corpus = shared_store(
        read_collection(collection, policy, layout), collection,
        # the layout decides what is read, so it keys the cache (auto-detection is a function of the content)
        source_fingerprint([collection], f"tsv-collection-{layout}-strict={strict}"), policy, cache_dir,
    )
    query_texts = read_queries_tsv(queries, policy)
    lines: dict[tuple[str, str], int] = {}
    judged = read_qrels(qrels, policy, lines)
    return _assemble(name, corpus, query_texts, Path(queries), judged, Path(qrels), rel_level, missing_docs, policy,
                     lines)


def irds_set(
    name: str,
    dataset_id: str,
    rel_level: int = 1,
    strict: bool = True,
    missing_docs: MissingDocs = "error",
    cache_dir: str | None = None,
) -> RetrievalSet:
    """An ir_datasets id such as `msmarco-passage/dev/small` or `beir/scifact/test` (needs `ir_datasets`)."""
    from dr.data.irds import irds_parts

    policy = ReadPolicy(strict=strict)
    docs, fingerprint, queries, qrels = irds_parts(dataset_id, policy)
    corpus = shared_store(docs, f"irds:{dataset_id}", fingerprint + f"-strict={strict}", policy, cache_dir)
    where = Path(f"irds:{dataset_id}")
    return _assemble(name, corpus, queries, where, qrels, where, rel_level, missing_docs, policy)


def _assemble(
    name: str,
    corpus: CorpusStore,
    queries: dict[str, str],
    queries_path: Path,
    qrels: Qrels,
    qrels_path: Path,
    rel_level: int,
    missing_docs: MissingDocs,
    policy: ReadPolicy,
    lines: dict[tuple[str, str], int] | None = None,
) -> RetrievalSet:
    """Keep the queries that have qrels; check every qrels id and that each query has a positive."""
    if missing_docs not in ("error", "keep"):
        raise ValueError(f"missing_docs must be 'error' or 'keep', got {missing_docs!r}")
    lines = lines or {}
    checked: Qrels = {}
    missing_pairs = 0
    for qid, judged in qrels.items():
        first_line = min((lines.get((qid, d)) for d in judged if (qid, d) in lines), default=None)
        if qid not in queries:
            policy.bad(qrels_path, first_line, f"qrels query id {qid!r} is not in {queries_path}")
            continue
        kept: dict[str, int] = {}
        for docid, grade in judged.items():
            if docid in corpus:
                kept[docid] = grade
            elif missing_docs == "keep":
                kept[docid] = grade
                missing_pairs += 1
            else:
                policy.bad(qrels_path, lines.get((qid, docid)),
                           f"qrels doc id {docid!r} (query {qid!r}) is not in {corpus.source}")
        if not any(g >= rel_level for g in kept.values()):
            policy.bad(qrels_path, first_line, f"query without positives: {qid!r} has no judgement >= {rel_level}")
            continue
        checked[qid] = kept
    if missing_pairs:
        # A pooled sub-collection (DL19 pool): judgements of passages without text are kept so that
        # nDCG uses the official ideal ranking; those passages can never be retrieved.
        logger.info("%s: %d judged pairs point to passages not in the corpus; kept in qrels", name, missing_pairs)
    policy.report()
    if not checked:
        raise ValueError(f"{name}: no query with qrels and positives ({qrels_path})")
    return RetrievalSet(name, corpus, {q: queries[q] for q in checked}, checked, rel_level)


SetBuilder = Callable[..., RetrievalSet]
