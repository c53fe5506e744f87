"""ir_datasets ids, fully offline: a dataset registered in ir_datasets' registry, backed by local files."""
from __future__ import annotations

import logging
import socket
import uuid
from typing import NamedTuple

import pytest

ir_datasets = pytest.importorskip("ir_datasets")
from ir_datasets.datasets.base import Dataset  # noqa: E402
from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries  # noqa: E402
from ir_datasets.util import LocalDownload  # noqa: E402

from dr.data import irds as dr_irds  # noqa: E402
from dr.data.errors import DataFormatError, ReadPolicy  # noqa: E402
from dr.data.irds import irds_parts  # noqa: E402
from dr.data.sources import irds_set  # noqa: E402

QRELS_DEFS = {0: "not relevant", 1: "relevant", 2: "highly relevant"}


class TitleQuery(NamedTuple):  # a query type with `title` and no `text` (like TREC topics)
    query_id: str
    title: str


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def register(tmp_path):
    """`register(docs, queries, qrels, query_cls=..., namespace=...)` writes the files and returns a fresh
    dataset id. `namespace` is the docs namespace (None, the default, as for a dataset without one)."""
    names: list[str] = []

    def _register(docs: str, queries: str, qrels: str, query_cls=None, namespace=None) -> str:
        name = f"dr-test-{uuid.uuid4().hex}/local"
        folder = tmp_path / name.replace("/", "_")
        folder.mkdir()
        for fname, text in (("docs.tsv", docs), ("queries.tsv", queries), ("qrels.txt", qrels)):
            (folder / fname).write_text(text)
        qargs = {"query_cls": query_cls} if query_cls else {}
        ds = Dataset(
            TsvDocs(LocalDownload(folder / "docs.tsv"), namespace=namespace),
            TsvQueries(LocalDownload(folder / "queries.tsv"), **qargs),
            TrecQrels(LocalDownload(folder / "qrels.txt"), QRELS_DEFS),
        )
        ir_datasets.registry.register(name, ds)
        names.append(name)
        return name

    yield _register
    for name in names:
        ir_datasets.registry._registered.pop(name, None)


DOCS = "d1\tgoldfish grow in ponds\nd2\twifi and bluetooth radios\nd3\tthe lusitania sank in 1915\n"
QUERIES = "q1\tgoldfish\nq2\twireless\nq3\tunjudged\n"
QRELS = "q1 0 d1 2\nq1 0 d3 0\nq2 0 d2 1\n"


def test_irds_set(register):
    dataset_id = register(DOCS, QUERIES, QRELS)
    rs = irds_set("local", dataset_id)
    assert rs.name == "local"
    assert len(rs.corpus) == 3
    assert rs.corpus.source == f"irds:{dataset_id}"
    assert rs.corpus.text("d3") == "the lusitania sank in 1915"
    assert rs.corpus.rows_of(["d3", "d1"]).tolist() == [2, 0]
    assert rs.queries == {"q1": "goldfish", "q2": "wireless"}
    assert rs.qrels == {"q1": {"d1": 2, "d3": 0}, "q2": {"d2": 1}}


def test_irds_parts(register):
    dataset_id = register(DOCS, QUERIES, QRELS)
    policy = ReadPolicy()
    docs, fingerprint, queries, qrels = irds_parts(dataset_id, policy)
    assert list(docs) == [
        (1, "d1", "", "goldfish grow in ponds"),
        (2, "d2", "", "wifi and bluetooth radios"),
        (3, "d3", "", "the lusitania sank in 1915"),
    ]
    assert queries == {"q1": "goldfish", "q2": "wireless", "q3": "unjudged"}
    assert qrels == {"q1": {"d1": 2, "d3": 0}, "q2": {"d2": 1}}
    assert len(fingerprint) == 20
    # no docs namespace: keyed by the dataset id, so another dataset does not share it
    assert fingerprint != irds_parts(register(DOCS, QUERIES, QRELS), policy)[1]


def test_irds_fingerprint_follows_the_docs_namespace(register):
    """Datasets that share documents (train/dev/test of one collection) share the corpus fingerprint."""
    policy = ReadPolicy()
    shared = f"dr-test-ns-{uuid.uuid4().hex}"
    train = irds_parts(register(DOCS, QUERIES, QRELS, namespace=shared), policy)[1]
    dev = irds_parts(register(DOCS, "q9\tother\n", "q9 0 d2 1\n", namespace=shared), policy)[1]
    other = irds_parts(register(DOCS, QUERIES, QRELS, namespace=shared + "-x"), policy)[1]
    assert len(train) == 20
    assert train == dev
    assert other != train


def test_datasets_without_namespace_do_not_share_a_cached_corpus(register):
    a = irds_set("a", register(DOCS, QUERIES, QRELS))
    b = irds_set("b", register("d1\tbananas\nd2\tcherries\n", "q1\tfruit\n", "q1 0 d1 1\n"))
    assert a.corpus.text("d1") == "goldfish grow in ponds"
    assert b.corpus.text("d1") == "bananas" and len(b.corpus) == 2
    assert a.corpus.fingerprint != b.corpus.fingerprint


def test_title_only_queries(register):
    dataset_id = register(DOCS, "q1\tgoldfish title\n", "q1 0 d1 1\n", query_cls=TitleQuery)
    rs = irds_set("local", dataset_id)
    assert rs.queries == {"q1": "goldfish title"}


def test_rel_level_2(register):
    dataset_id = register(DOCS, QUERIES, QRELS)
    with pytest.raises(DataFormatError) as e:
        irds_set("local", dataset_id, rel_level=2)
    assert str(e.value) == f"irds:{dataset_id}: query without positives: 'q2' has no judgement >= 2"
    rs = irds_set("local", dataset_id, rel_level=2, strict=False)
    assert rs.qrels == {"q1": {"d1": 2, "d3": 0}}


@pytest.mark.parametrize(
    ("docs", "queries", "qrels", "expected"),
    [
        (DOCS + "d4\t  \n", QUERIES, QRELS, ":4: empty text for id 'd4'"),
        (DOCS, "q1\tgoldfish\nq1\tagain\n", QRELS, ":2: duplicate id 'q1'"),
        (DOCS, "q1\tgoldfish\nq2\t \n", QRELS, ":2: empty text for query 'q2'"),
        (DOCS, QUERIES, QRELS + "q1 0 d1 1\n", ":4: duplicate judgement for ('q1', 'd1')"),
        (DOCS + "d1\tagain\n", QUERIES, QRELS, ":4: duplicate id 'd1' (first on line 1)"),
        (DOCS, QUERIES, QRELS + "q2 0 d9 1\n", ": qrels doc id 'd9' (query 'q2') is not in irds:"),
        (DOCS, QUERIES, QRELS + "q7 0 d1 1\n", ": qrels query id 'q7' is not in irds:"),
    ],
)
def test_bad_records(register, docs, queries, qrels, expected):
    dataset_id = register(docs, queries, qrels)
    with pytest.raises(DataFormatError) as e:
        irds_set("local", dataset_id)
    assert str(e.value).startswith(f"irds:{dataset_id}{expected}")


def test_lenient(register, caplog):
    dataset_id = register(
        DOCS + "d4\t \nd2\tsecond d2\n",  # 2 bad docs (records 4 and 5)
        QUERIES + "q1\tagain\n",  # 1 bad query
        QRELS + "q2 0 d2 0\nq2 0 d9 1\n",  # a repeated pair and a missing passage
    )
    with caplog.at_level(logging.INFO, logger="dr"):
        rs = irds_set("local", dataset_id, strict=False)
    assert len(rs.corpus) == 3 and rs.corpus.text("d2") == "wifi and bluetooth radios"
    assert rs.queries == {"q1": "goldfish", "q2": "wireless"}
    assert rs.qrels == {"q1": {"d1": 2, "d3": 0}, "q2": {"d2": 1}}
    summary = [r for r in caplog.records if r.getMessage().startswith("lenient read skipped ")]
    assert sum(r.args[0] for r in summary) == 5
    skipping = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping ")]
    assert len(skipping) == 5
    assert f"skipping irds:{dataset_id}:4: empty text for id 'd4'" in skipping
    assert f"skipping irds:{dataset_id}:5: duplicate id 'd2' (first on line 2)" in skipping


def test_missing_docs_keep(register):
    dataset_id = register(DOCS, QUERIES, QRELS + "q2 0 d9 2\n")
    rs = irds_set("local", dataset_id, missing_docs="keep")
    assert rs.qrels["q2"] == {"d2": 1, "d9": 2}
    assert "d9" not in rs.corpus


def test_second_load_uses_the_cache(register, monkeypatch):
    dataset_id = register(DOCS, QUERIES, QRELS)
    first = irds_set("local", dataset_id)

    def no_docs(ds, where, policy):
        raise AssertionError("docs were read although the cache should have been used")
        yield  # pragma: no cover

    monkeypatch.setattr(dr_irds, "_docs", no_docs)
    again = irds_set("local", dataset_id)
    assert again.corpus.fingerprint == first.corpus.fingerprint
    assert again.corpus.text("d2") == "wifi and bluetooth radios"
    # strict and lenient loads are separate cache entries, so this one has to read the docs
    with pytest.raises(AssertionError, match="cache should have been used"):
        irds_set("local", dataset_id, strict=False)


def test_unknown_id_is_not_fetched():
    with pytest.raises(KeyError):
        irds_set("x", f"dr-test-{uuid.uuid4().hex}/absent")
