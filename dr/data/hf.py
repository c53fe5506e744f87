"""Hugging Face `datasets` readers: Tevatron-style training data and BEIR on the Hub.

- Tevatron (e.g. `Tevatron/msmarco-passage`): rows `query_id, query, positive_passages, negative_passages`,
  each passage `{docid, title, text}`. `hf_tevatron_set` makes the retrieval set (qrels: the positives;
  corpus: a corpus dataset when given, else every passage the rows list), `TevatronNegatives` hands out
  the negatives the rows list, through the `negatives=` interface.
- BEIR on the Hub (e.g. `BeIR/scifact` + `BeIR/scifact-qrels`, or `mteb/scifact`): configs `corpus`
  (`_id, title, text`) and `queries` (`_id, text`), and a qrels dataset (`query-id, corpus-id, score`).

`dataset` is a Hub name, a builder with `data_files` (`json`, `parquet`, ...), or a local directory written
by `save_to_disk` (then `config` names a subdirectory when there is one, and `split` a split of a saved
DatasetDict). Bad records are reported as `hf:NAME[split]:ROW` (1-based), strict or lenient as elsewhere.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dr.data.corpus import shared_store
from dr.data.errors import ReadPolicy
from dr.data.prepared import text_key
from dr.data.sources import MissingDocs, RetrievalSet, _assemble
from dr.types import Negatives, Qrels

logger = logging.getLogger(__name__)
_BATCH = 1000


class DatasetUnavailableError(RuntimeError):
    """A dataset that is no local path and that the Hub (or, offline, the local cache) cannot provide."""


@dataclass(frozen=True)
class HFSource:
    dataset: str
    config: str | None = None
    split: str | None = None
    data_files: Any = None

    @property
    def where(self) -> str:
        """How bad records are located: `hf:NAME[:CONFIG][split]`."""
        return f"hf:{self.dataset}" + (f":{self.config}" if self.config else "") + f"[{self.split}]"


def load_hf(source: HFSource):
    """The `datasets.Dataset` of `source`; `DatasetUnavailableError` naming it when it cannot be had."""
    import datasets

    local = Path(source.dataset)
    if local.is_dir() and _saved(local):
        return _from_disk(local, source)
    try:
        return datasets.load_dataset(source.dataset, source.config, split=source.split, data_files=source.data_files)
    except Exception as e:  # the Hub client raises several kinds (ConnectionError, OfflineModeIsEnabled, 404s)
        if local.exists() or source.data_files is not None:
            raise
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False") or \
            os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("", "0", "false", "False")
        why = ("offline (HF_HUB_OFFLINE=1) and it is not in the local datasets cache" if offline
               else "the Hugging Face Hub could not provide it")
        raise DatasetUnavailableError(
            f"dataset {source.dataset!r} (config {source.config!r}, split {source.split!r}) is no local directory, "
            f"and {why}: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}") from e


def _saved(path: Path) -> bool:
    return any((path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json")) or \
        any(p.is_dir() and _saved(p) for p in path.iterdir())


def _from_disk(path: Path, source: HFSource):
    import datasets

    if source.config and (path / source.config).is_dir():
        path = path / source.config
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if source.split not in loaded:
            raise KeyError(f"{path}: no split {source.split!r} (it has {sorted(loaded)})")
        return loaded[source.split]
    return loaded


def _rows(ds) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(row number from 1, row)`, read in batches (a dict per row costs only a batch at a time)."""
    n = 0
    for batch in ds.iter(batch_size=_BATCH):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns)):
            n += 1
            yield n, dict(zip(columns, values))


def _require(ds, columns: tuple[str, ...], source: HFSource) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{source.where}: missing column(s) {missing}; it has {ds.column_names}")


def _fingerprint(ds, *parts: object) -> str:
    """Names the cached corpus: datasets' own fingerprint of the Arrow data, and how it is read."""
    return text_key("hf", getattr(ds, "_fingerprint", None) or ds.info.description, *parts)


# ---- Tevatron ----------------------------------------------------------------------------------------


def hf_tevatron_set(
    name: str,
    dataset: str,
    split: str = "train",
    config: str | None = None,
    data_files: Any = None,
    corpus_dataset: str | None = None,
    corpus_config: str | None = None,
    corpus_split: str = "train",
    strict: bool = True,
    cache_dir: str | None = None,
) -> RetrievalSet:
    """Training data in Tevatron's schema. Without `corpus_dataset` the corpus is every passage the rows
    list (first text of a docid kept); with it, the corpus dataset (`docid, title, text`)."""
    source = HFSource(dataset, config, split, data_files)
    ds = load_hf(source)
    _require(ds, ("query_id", "query", "positive_passages", "negative_passages"), source)
    policy = ReadPolicy(strict=strict)
    queries: dict[str, str] = {}
    qrels: Qrels = {}
    for row, r in _rows(ds.select_columns(["query_id", "query", "positive_passages"])):
        qid, text = str(r["query_id"] if r["query_id"] is not None else ""), r["query"]
        if not qid or not isinstance(text, str) or not text.strip():
            policy.bad(source.where, row, "malformed row: needs a query_id and a non-empty query")
        elif qid in queries:
            policy.bad(source.where, row, f"duplicate id {qid!r}")
        else:
            queries[qid] = text
            positives = [p for p in (r["positive_passages"] or []) if p and p.get("docid") is not None]
            qrels[qid] = {str(p["docid"]): 1 for p in positives}
    if corpus_dataset:
        corpus_source = HFSource(corpus_dataset, corpus_config, corpus_split)
        corpus_ds = load_hf(corpus_source)
        _require(corpus_ds, ("docid", "text"), corpus_source)
        records = _corpus_records(corpus_ds, corpus_source, policy, ("docid", "title", "text"))
        fp = _fingerprint(corpus_ds, "tevatron-corpus", strict)
        where = corpus_source.where
    else:
        records = _listed_passages(ds, source, policy)
        fp = _fingerprint(ds, "tevatron-listed", strict)
        where = source.where
    corpus = shared_store(records, where, fp, policy, cache_dir)
    return _assemble(name, corpus, queries, Path(source.where), qrels, Path(source.where), 1, "error", policy)


def _listed_passages(ds, source: HFSource, policy: ReadPolicy) -> Iterator[tuple[int, str, str, str]]:
    seen: set[str] = set()
    for row, r in _rows(ds.select_columns(["positive_passages", "negative_passages"])):
        for passage in (r["positive_passages"] or []) + (r["negative_passages"] or []):
            record = _passage(passage, row, source, policy, ("docid", "title", "text"))
            if record is not None and record[1] not in seen:
                seen.add(record[1])
                yield record


def _corpus_records(ds, source: HFSource, policy: ReadPolicy,
                    keys: tuple[str, str, str]) -> Iterator[tuple[int, str, str, str]]:
    for row, r in _rows(ds):
        record = _passage(r, row, source, policy, keys)
        if record is not None:
            yield record


def _passage(p: Any, row: int, source: HFSource, policy: ReadPolicy,
             keys: tuple[str, str, str]) -> tuple[int, str, str, str] | None:
    """`(row, id, title, text)` of a passage dict, or None (reported) when it has no id or no text."""
    id_key, title_key, text_key_ = keys
    if not isinstance(p, dict) or p.get(id_key) is None or str(p.get(id_key)) == "":
        policy.bad(source.where, row, f"malformed passage: missing {id_key!r}")
        return None
    title, text = str(p.get(title_key) or ""), str(p.get(text_key_) or "")
    if not (title.strip() or text.strip()):
        policy.bad(source.where, row, f"empty text for id {str(p[id_key])!r}")
        return None
    return row, str(p[id_key]), title, text


@dataclass
class TevatronNegatives:
    """The negatives a Tevatron-style dataset lists for each query (`negatives=hf_tevatron`). Passages
    outside the training corpus and positives listed as negatives are errors naming the row (or counted
    skips with `strict: false`)."""

    dataset: str
    split: str = "train"
    config: str | None = None
    data_files: Any = None
    strict: bool = True

    def negatives(self, train_set: RetrievalSet, qids: list[str]) -> Negatives:
        source = HFSource(self.dataset, self.config, self.split, self.data_files)
        ds = load_hf(source)
        _require(ds, ("query_id", "negative_passages"), source)
        policy = ReadPolicy(strict=self.strict)
        wanted = set(qids)
        out: Negatives = {q: [] for q in qids}
        for row, r in _rows(ds.select_columns(["query_id", "negative_passages"])):
            qid = str(r["query_id"])
            if qid not in wanted:
                continue
            for p in r["negative_passages"] or []:
                pid = str(p.get("docid")) if isinstance(p, dict) and p.get("docid") is not None else None
                if pid is None:
                    policy.bad(source.where, row, "malformed passage: missing 'docid'")
                elif pid not in train_set.corpus:
                    policy.bad(source.where, row, f"passage id {pid!r} is not in {train_set.corpus.source}")
                elif train_set.qrels[qid].get(pid, 0) > 0:
                    policy.bad(source.where, row, f"passage {pid!r} is a positive of query {qid!r}")
                elif pid not in out[qid]:
                    out[qid].append(pid)
        policy.report()
        if not any(out.values()):
            raise ValueError(f"{source.where}: no negatives for any of the {len(qids)} training queries of "
                             f"{train_set.name}")
        return out


# ---- BEIR on the Hub ---------------------------------------------------------------------------------


def hf_beir_set(
    name: str,
    dataset: str,
    split: str = "test",
    qrels_dataset: str | None = None,
    qrels_config: str | None = None,
    corpus_config: str = "corpus",
    queries_config: str = "queries",
    corpus_split: str = "corpus",
    queries_split: str = "queries",
    rel_level: int = 1,
    strict: bool = True,
    missing_docs: MissingDocs = "error",
    cache_dir: str | None = None,
) -> RetrievalSet:
    """A BEIR dataset on the Hub: `dataset` with configs `corpus` and `queries` (BeIR/NAME, mteb/NAME) and
    qrels in `qrels_dataset` (default: `dataset + "-qrels"`, BeIR's layout; mteb keeps them in `dataset`
    itself, config `default`: set `qrels_dataset` to the same name and `qrels_config: default`)."""
    policy = ReadPolicy(strict=strict)
    corpus_source = HFSource(dataset, corpus_config, corpus_split)
    corpus_ds = load_hf(corpus_source)
    _require(corpus_ds, ("_id", "text"), corpus_source)
    corpus = shared_store(_corpus_records(corpus_ds, corpus_source, policy, ("_id", "title", "text")),
                          corpus_source.where, _fingerprint(corpus_ds, "beir-corpus", strict), policy, cache_dir)
    queries_source = HFSource(dataset, queries_config, queries_split)
    queries_ds = load_hf(queries_source)
    _require(queries_ds, ("_id", "text"), queries_source)
    queries: dict[str, str] = {}
    for row, r in _rows(queries_ds.select_columns(["_id", "text"])):
        qid, text = str(r["_id"]), r["text"]
        if not isinstance(text, str) or not text.strip():
            policy.bad(queries_source.where, row, f"empty text for query {qid!r}")
        elif qid in queries:
            policy.bad(queries_source.where, row, f"duplicate id {qid!r}")
        else:
            queries[qid] = text
    qrels_source = HFSource(qrels_dataset or f"{dataset}-qrels", qrels_config, split)
    qrels, lines = _read_qrels(qrels_source, policy)
    return _assemble(name, corpus, queries, Path(queries_source.where), qrels, Path(qrels_source.where), rel_level,
                     missing_docs, policy, lines)


def _read_qrels(source: HFSource, policy: ReadPolicy) -> tuple[Qrels, dict[tuple[str, str], int]]:
    ds = load_hf(source)
    _require(ds, ("query-id", "corpus-id", "score"), source)
    qrels: Qrels = {}
    lines: dict[tuple[str, str], int] = {}
    for row, r in _rows(ds.select_columns(["query-id", "corpus-id", "score"])):
        qid, docid = str(r["query-id"]), str(r["corpus-id"])
        try:
            grade = int(float(r["score"]))
        except (TypeError, ValueError):
            policy.bad(source.where, row, f"malformed row: relevance {r['score']!r} is not a number")
            continue
        if docid in qrels.get(qid, {}):
            policy.bad(source.where, row, f"duplicate judgement for ({qid!r}, {docid!r})")
        else:
            qrels.setdefault(qid, {})[docid] = grade
            lines[(qid, docid)] = row
    return qrels, lines
