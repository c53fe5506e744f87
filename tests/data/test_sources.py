"""Assembling a RetrievalSet: rel_level, missing passages, set-level checks, strict and lenient."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dr.data import sources
from dr.data.errors import DataFormatError, ReadPolicy
from dr.data.sources import msmarco_set


@pytest.fixture
def policies(monkeypatch):
    made: list[ReadPolicy] = []

    class Recording(ReadPolicy):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(sources, "ReadPolicy", Recording)
    return made


@pytest.fixture
def dl(tmp_path) -> dict[str, Path]:
    """A small TREC-DL-like set: 6 passages, 3 topics, graded TREC qrels (space separated, Q0)."""
    coll = tmp_path / "collection.tsv"
    coll.write_text("".join(f"{i}\tpassage number {i}\n" for i in range(100, 106)))
    topics = tmp_path / "topics.txt"
    topics.write_text("1\tfirst topic\n2\tsecond topic\n3\tthird topic\n4\tunjudged topic\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(
        "1 Q0 100 3\n1 Q0 101 0\n"  # topic 1: a grade-3 passage
        "2 Q0 102 2\n2 Q0 103 1\n"  # topic 2: a grade-2 passage
        "3 Q0 104 1\n3 Q0 105 0\n"  # topic 3: only grade 1 and 0
    )
    return {"collection": coll, "queries": topics, "qrels": qrels}


def _set(dl, **kw):
    return msmarco_set("dl", str(dl["collection"]), str(dl["queries"]), str(dl["qrels"]), **kw)


def test_rel_level_1_keeps_grade_1_queries(dl):
    rs = _set(dl)
    assert sorted(rs.queries) == ["1", "2", "3"]  # 4 has no qrels
    assert rs.qrels["3"] == {"104": 1, "105": 0}
    assert rs.rel_level == 1


def test_rel_level_2_strict_rejects_query_without_positives(dl):
    with pytest.raises(DataFormatError) as e:
        _set(dl, rel_level=2)
    # topic 3's first judgement is on line 5
    assert str(e.value) == f"{dl['qrels']}:5: query without positives: '3' has no judgement >= 2"
    assert e.value.line == 5 and e.value.path == str(dl["qrels"])


def test_rel_level_2_lenient_drops_it(dl, policies, caplog):
    with caplog.at_level(logging.WARNING, logger="dr"):
        rs = _set(dl, rel_level=2, strict=False)
    assert rs.rel_level == 2
    assert rs.queries == {"1": "first topic", "2": "second topic"}
    assert rs.qrels == {"1": {"100": 3, "101": 0}, "2": {"102": 2, "103": 1}}  # grades below 2 are kept
    assert dict(policies[0].skipped) == {"qrels.txt: query without positives": 1}
    messages = [r.getMessage() for r in caplog.records]
    # topic 3 first appears on qrels line 5
    assert f"skipping {dl['qrels']}:5: query without positives: '3' has no judgement >= 2" in messages
    assert "lenient read skipped 1 record(s): qrels.txt: query without positives" in messages


def test_negative_grades_are_not_positives(tmp_path):
    coll = tmp_path / "c.tsv"
    coll.write_text("a\tx\nb\ty\n")
    q = tmp_path / "q.tsv"
    q.write_text("1\tone\n2\ttwo\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1 0 a 1\n2 0 b -1\n")
    with pytest.raises(DataFormatError, match="query without positives: '2'"):
        msmarco_set("n", str(coll), str(q), str(qrels))


def test_missing_doc_error(dl):
    with open(dl["qrels"], "a") as f:
        f.write("2 Q0 999 3\n")
    with pytest.raises(DataFormatError) as e:
        _set(dl)
    # the appended judgement is line 7
    assert str(e.value) == f"{dl['qrels']}:7: qrels doc id '999' (query '2') is not in {dl['collection']}"
    assert e.value.line == 7 and e.value.path == str(dl["qrels"])


def test_missing_doc_keep(dl, caplog):
    with open(dl["qrels"], "a") as f:
        f.write("2 Q0 999 3\n1 Q0 998 0\n")
    with caplog.at_level(logging.INFO, logger="dr"):
        rs = _set(dl, missing_docs="keep")
    assert rs.qrels["2"] == {"102": 2, "103": 1, "999": 3}
    assert rs.qrels["1"] == {"100": 3, "101": 0, "998": 0}
    assert "999" not in rs.corpus and len(rs.corpus) == 6
    assert "dl: 2 judged pairs point to passages not in the corpus; kept in qrels" in [
        r.getMessage() for r in caplog.records
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_missing_doc_keep_counts_as_positive(tmp_path):
    """A pooled sub-collection: a query whose only positive has no text is still evaluated."""
    coll = tmp_path / "pool.tsv"
    coll.write_text("10\tten\n")
    q = tmp_path / "q.tsv"
    q.write_text("1\tone\n2\ttwo\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1 Q0 10 2\n2 Q0 77 2\n2 Q0 10 0\n")
    rs = msmarco_set("pool", str(coll), str(q), str(qrels), rel_level=2, missing_docs="keep")
    assert rs.qrels == {"1": {"10": 2}, "2": {"77": 2, "10": 0}}
    with pytest.raises(DataFormatError, match="qrels doc id '77'"):
        msmarco_set("pool", str(coll), str(q), str(qrels), rel_level=2)


def test_missing_doc_lenient_error_mode_drops_pairs(dl, policies):
    with open(dl["qrels"], "a") as f:
        f.write("2 Q0 999 3\n3 Q0 998 1\n")
    rs = _set(dl, strict=False)
    assert rs.qrels["2"] == {"102": 2, "103": 1}
    assert rs.qrels["3"] == {"104": 1, "105": 0}
    # two different ids, one kind of problem: one summary key
    assert dict(policies[0].skipped) == {f"qrels.txt: qrels doc id ... (query ...) is not in {dl['collection']}": 2}


def test_missing_query(dl, policies):
    with open(dl["qrels"], "a") as f:
        f.write("9 Q0 100 1\n")
    with pytest.raises(DataFormatError) as e:
        _set(dl)
    assert str(e.value) == f"{dl['qrels']}:7: qrels query id '9' is not in {dl['queries']}"
    assert e.value.line == 7
    rs = _set(dl, strict=False)
    assert "9" not in rs.qrels and sorted(rs.queries) == ["1", "2", "3"]
    assert sum(policies[-1].skipped.values()) == 1


def test_missing_docs_value_checked(dl):
    with pytest.raises(ValueError, match="missing_docs must be 'error' or 'keep', got 'drop'"):
        _set(dl, missing_docs="drop")


def test_no_usable_query_is_an_error(dl):
    dl["qrels"].write_text("3 Q0 104 1\n")
    with pytest.raises(ValueError, match=r"dl: no query with qrels and positives"):
        _set(dl, rel_level=2, strict=False)


def test_lenient_cascade_is_counted_once_per_record(dl, policies, caplog):
    """A bad query line is skipped by the reader, then its qrels are skipped as an unknown query."""
    with open(dl["queries"], "a") as f:
        f.write("5\t \n")  # line 5: empty text
    with open(dl["qrels"], "a") as f:
        f.write("5 Q0 100 1\n")
    with caplog.at_level(logging.WARNING, logger="dr"):
        rs = _set(dl, strict=False)
    assert sorted(rs.queries) == ["1", "2", "3"]
    assert dict(policies[0].skipped) == {
        "topics.txt: empty text for query ...": 1,
        f"qrels.txt: qrels query id ... is not in {dl['queries']}": 1,
    }
    skipping = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert skipping == [
        f"skipping {dl['queries']}:5: empty text for query '5'",
        f"skipping {dl['qrels']}:7: qrels query id '5' is not in {dl['queries']}",
    ]


def test_tiny_data_dir_builders_agree(tiny_data_dir):
    """The BEIR copy and the DL19-style copy of the fixture passages hold the same judgements."""
    beir = sources.beir_set("scifact", str(tiny_data_dir / "scifact"), "test")
    dl19 = msmarco_set(
        "dl19",
        str(tiny_data_dir / "msmarco-dl19-pool" / "collection.tsv"),
        str(tiny_data_dir / "trec-dl-2019" / "topics.dl19-passage.txt"),
        str(tiny_data_dir / "trec-dl-2019" / "qrels.dl19-passage.txt"),
        rel_level=2,
    )
    assert {q[1:]: {d[1:]: g for d, g in j.items()} for q, j in beir.qrels.items()} == dl19.qrels
    assert len(beir.corpus) == len(dl19.corpus) == 12
    assert beir.corpus.text("d5") == "Bluetooth " + dl19.corpus.text("5")
