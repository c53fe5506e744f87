"""BEIR folders: corpus.jsonl / queries.jsonl / qrels/{split}.tsv, good and bad input, strict and lenient."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import write_beir

from dr.data import sources
from dr.data.beir import read_beir_corpus, read_beir_queries
from dr.data.errors import DataFormatError, ReadPolicy
from dr.data.sources import beir_set


def _write(path: Path, lines: list) -> Path:
    """Write one line per item: dicts as JSON, str as text, bytes verbatim."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for item in lines:
            if isinstance(item, dict):
                item = json.dumps(item)
            if isinstance(item, str):
                item = item.encode("utf-8")
            f.write(item + b"\n")
    return path


@pytest.fixture
def policies(monkeypatch):
    """Every ReadPolicy that `dr.data.sources` creates, so tests can look at what it skipped."""
    made: list[ReadPolicy] = []

    class Recording(ReadPolicy):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(sources, "ReadPolicy", Recording)
    return made


# ---------------------------------------------------------------------------------------------- good input


def test_beir_set_reads_the_tiny_folder(tmp_path):
    root = write_beir(tmp_path / "scifact", "test")
    with open(root / "queries.jsonl", "a") as f:  # a query without qrels is not part of the set
        f.write(json.dumps({"_id": "q5", "text": "an unjudged query"}) + "\n")

    rs = beir_set("scifact", str(root), "test")

    assert rs.name == "scifact"
    assert rs.rel_level == 1
    assert len(rs.corpus) == 12
    assert sorted(rs.queries) == ["q1", "q2", "q3", "q4"]
    assert rs.queries["q3"] == "why did the us enter world war one"
    assert rs.qrels == {
        "q1": {"d1": 2, "d3": 1, "d2": 0},
        "q2": {"d4": 3, "d5": 2, "d6": 1},
        "q3": {"d7": 3, "d9": 2, "d8": 1},
        "q4": {"d10": 2, "d11": 3, "d12": 1},
    }
    # title and text joined with one space
    assert rs.corpus.text("d1") == "Goldfish Goldfish grow larger in big ponds with clean water and plenty of food."
    assert rs.corpus.texts(rs.corpus.rows_of(["d12", "d4"])) == [
        "Sunlight Sunlight exposure lets the skin produce vitamin D naturally.",
        "Wifi Wifi is a wireless network technology for local area networking of devices.",
    ]
    assert "d7" in rs.corpus and "d13" not in rs.corpus
    assert repr(rs) == "RetrievalSet('scifact', 12 passages, 4 queries)"


def test_beir_set_reads_another_split(tmp_path):
    root = write_beir(tmp_path / "b", "dev")
    rs = beir_set("b", str(root), "dev")
    assert rs.qrels["q2"] == {"d4": 3, "d5": 2, "d6": 1}
    with pytest.raises(FileNotFoundError, match="test.tsv"):
        beir_set("b", str(root), "test")


def test_read_beir_corpus_records_and_line_numbers(tmp_path):
    path = _write(tmp_path / "corpus.jsonl", [
        {"_id": "a", "title": "T", "text": "body a", "metadata": {}},
        "",  # blank lines are skipped but still counted
        {"_id": 7, "text": "numeric id, no title"},
        {"_id": "c", "title": "Only a title", "text": ""},
        {"_id": "d", "title": None, "text": "null title"},
    ])
    policy = ReadPolicy()
    assert list(read_beir_corpus(path, policy)) == [
        (1, "a", "T", "body a"),
        (3, "7", "", "numeric id, no title"),
        (4, "c", "Only a title", ""),
        (5, "d", "", "null title"),
    ]
    assert not policy.skipped


def test_read_beir_queries(tmp_path):
    path = _write(tmp_path / "queries.jsonl", [
        {"_id": "q1", "text": "first", "metadata": {}},
        {"_id": 2, "text": "second"},
    ])
    assert read_beir_queries(path, ReadPolicy()) == {"q1": "first", "2": "second"}


def test_crlf_line_endings(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "x"}\r\n{"_id": "b", "text": "y"}\r\n')
    assert [r[1:] for r in read_beir_corpus(path, ReadPolicy())] == [("a", "", "x"), ("b", "", "y")]


# ----------------------------------------------------------------------------------------------- bad input

GOOD = {"_id": "g", "title": "", "text": "good"}


@pytest.mark.parametrize(
    ("bad_line", "words"),
    [
        ('{"_id": "b", "text": "unterminated', "malformed line: invalid JSON"),
        ('["_id", "b"]', "malformed line: expected a JSON object"),
        ('{"title": "t", "text": "no id"}', "malformed line: missing '_id'"),
        ('{"_id": "", "text": "empty id"}', "malformed line: missing '_id'"),
        ('{"_id": "b", "title": "", "text": "   "}', "empty text for id 'b'"),
        ('{"_id": "b"}', "empty text for id 'b'"),
        (b'{"_id": "b", "text": "caf\xff"}', "not UTF-8: byte 0xff"),
    ],
)
def test_corpus_bad_line_strict(tmp_path, bad_line, words):
    path = _write(tmp_path / "corpus.jsonl", [GOOD, GOOD | {"_id": "h"}, bad_line, GOOD | {"_id": "i"}])
    with pytest.raises(DataFormatError) as e:
        list(read_beir_corpus(path, ReadPolicy()))
    assert str(e.value).startswith(f"{path}:3: ")
    assert words in str(e.value)
    assert e.value.line == 3 and e.value.path == str(path)


@pytest.mark.parametrize(
    ("bad_line", "words"),
    [
        ('{"_id": "q1", "text": "again"}', "duplicate id 'q1'"),
        ('{"_id": "q2", "text": " "}', "empty text for query 'q2'"),
        ('{"_id": "q2"}', "malformed line: query needs '_id' and 'text'"),
        ('{"text": "no id"}', "malformed line: query needs '_id' and 'text'"),
        ("not json", "malformed line: invalid JSON"),
        (b'{"_id": "q2", "text": "\xc3("}', "not UTF-8"),
    ],
)
def test_queries_bad_line_strict(tmp_path, bad_line, words):
    path = _write(tmp_path / "queries.jsonl", [{"_id": "q0", "text": "zero"}, {"_id": "q1", "text": "one"}, bad_line])
    with pytest.raises(DataFormatError) as e:
        read_beir_queries(path, ReadPolicy())
    assert str(e.value).startswith(f"{path}:3: ")
    assert words in str(e.value)


def test_non_utf8_reports_column(tmp_path):
    path = _write(tmp_path / "corpus.jsonl", [b'{"_id": "x\xff"}'])
    with pytest.raises(DataFormatError, match=r"byte 0xff at column 11"):
        list(read_beir_corpus(path, ReadPolicy()))


def test_beir_set_duplicate_corpus_id_names_both_lines(tmp_path):
    root = write_beir(tmp_path / "s")
    with open(root / "corpus.jsonl", "a") as f:  # line 13 repeats d3 (line 3)
        f.write(json.dumps({"_id": "d3", "title": "", "text": "a second d3"}) + "\n")
    with pytest.raises(DataFormatError) as e:
        beir_set("s", str(root), "test")
    msg = str(e.value)
    assert msg.startswith(f"{root / 'corpus.jsonl'}:13: ")
    assert "duplicate id 'd3'" in msg and "first on line 3" in msg


def test_beir_set_duplicate_query_id(tmp_path):
    root = write_beir(tmp_path / "s")
    with open(root / "queries.jsonl", "a") as f:  # line 5 repeats q2
        f.write(json.dumps({"_id": "q2", "text": "again"}) + "\n")
    with pytest.raises(DataFormatError) as e:
        beir_set("s", str(root), "test")
    assert str(e.value).startswith(f"{root / 'queries.jsonl'}:5: ")
    assert "duplicate id 'q2'" in str(e.value)


def test_beir_set_qrels_bad_line(tmp_path):
    root = write_beir(tmp_path / "s")
    qrels = root / "qrels" / "test.tsv"
    with open(qrels, "a") as f:  # header + 12 judgements, so this is line 14
        f.write("q1\td4\n\tq1\td5\t1\t9\n")
    with pytest.raises(DataFormatError) as e:
        beir_set("s", str(root), "test")
    # line 14 (2 columns) is fine; line 15 has 5 fields
    assert str(e.value).startswith(f"{qrels}:15: ")
    assert "malformed line: expected 2, 3 or 4 columns, got 5" in str(e.value)  # the leading tab is a field


@pytest.mark.parametrize(
    ("extra_qrels", "words"),
    [
        ("q1\td99\t1\n", "qrels doc id 'd99' (query 'q1') is not in"),
        ("q77\td1\t1\n", "qrels query id 'q77' is not in"),
    ],
)
def test_beir_set_missing_ids_name_the_qrels_file(tmp_path, extra_qrels, words):
    root = write_beir(tmp_path / "s")
    qrels = root / "qrels" / "test.tsv"
    with open(qrels, "a") as f:
        f.write(extra_qrels)
    with pytest.raises(DataFormatError) as e:
        beir_set("s", str(root), "test")
    # header + 12 judgements, so the appended judgement is line 14
    assert str(e.value).startswith(f"{qrels}:14: ")
    assert words in str(e.value)
    assert e.value.line == 14


def test_beir_set_query_without_positives(tmp_path):
    root = write_beir(tmp_path / "s")
    qrels = root / "qrels" / "test.tsv"
    with open(root / "queries.jsonl", "a") as f:
        f.write(json.dumps({"_id": "q5", "text": "only negatives"}) + "\n")
    with open(qrels, "a") as f:  # header + 12 judgements, so q5 first appears on line 14
        f.write("q5\td1\t0\nq5\td2\t0\n")
    with pytest.raises(DataFormatError) as e:
        beir_set("s", str(root), "test")
    assert str(e.value) == f"{qrels}:14: query without positives: 'q5' has no judgement >= 1"
    assert e.value.line == 14


def test_beir_set_missing_queries_file(tmp_path):
    root = write_beir(tmp_path / "s")
    (root / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="queries.jsonl"):
        beir_set("s", str(root), "test")


# ------------------------------------------------------------------------------------------------- lenient


def test_beir_set_lenient_skips_counts_and_logs_every_bad_record(tmp_path, caplog, policies):
    root = write_beir(tmp_path / "s")
    corpus, queries, qrels = root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / "test.tsv"
    with open(corpus, "ab") as f:  # 12 good lines, then 4 bad ones (lines 13-16)
        f.write(b'{"_id": "d13", "text": \n')  # 13: invalid JSON
        f.write(b'{"_id": "d14", "text": "\xff"}\n')  # 14: not UTF-8
        f.write(b'{"_id": "d15", "title": "", "text": ""}\n')  # 15: empty text
        f.write(b'{"_id": "d1", "title": "Dup", "text": "a later d1"}\n')  # 16: duplicate of line 1
    with open(queries, "a") as f:  # 4 good lines, then 2 bad ones (lines 5-6) and one good unjudged-positive
        f.write(json.dumps({"_id": "q1", "text": "duplicate q1"}) + "\n")  # 5: duplicate
        f.write(json.dumps({"_id": "q9", "text": ""}) + "\n")  # 6: empty text
        f.write(json.dumps({"_id": "q5", "text": "only negatives"}) + "\n")  # 7: good
    with open(qrels, "a") as f:  # 3 set-level problems (header + 12 judgements, so lines 14-16)
        f.write("q1\td99\t1\n")  # 14: doc id missing from the corpus
        f.write("q77\td1\t1\n")  # 15: query id missing from the queries
        f.write("q5\td1\t0\n")  # 16: query without positives

    with caplog.at_level(logging.INFO, logger="dr"):
        rs = beir_set("s", str(root), "test", strict=False)

    # the good records survive, the bad ones are gone
    assert len(rs.corpus) == 12
    assert "d13" not in rs.corpus and "d14" not in rs.corpus and "d15" not in rs.corpus
    assert rs.corpus.text("d1") == "Goldfish Goldfish grow larger in big ponds with clean water and plenty of food."
    assert sorted(rs.queries) == ["q1", "q2", "q3", "q4"]
    assert rs.queries["q1"] == "do goldfish grow in ponds"
    assert rs.qrels["q1"] == {"d1": 2, "d3": 1, "d2": 0}
    assert "q77" not in rs.qrels and "q5" not in rs.qrels

    # nothing dropped silently: 4 + 2 + 3 bad records counted, by file
    (policy,) = policies
    assert policy.strict is False
    by_file = {"corpus.jsonl": 0, "queries.jsonl": 0, "test.tsv": 0}
    for key, n in policy.skipped.items():
        by_file[key.split(":")[0]] += n
    assert by_file == {"corpus.jsonl": 4, "queries.jsonl": 2, "test.tsv": 3}

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    skipping = [m for m in warnings if m.startswith("skipping ")]
    assert len(skipping) == 9
    for where in (f"{corpus}:13:", f"{corpus}:14:", f"{corpus}:15:", f"{corpus}:16:", f"{queries}:5:",
                  f"{queries}:6:", f"{qrels}:14:", f"{qrels}:15:", f"{qrels}:16:"):
        assert sum(m.startswith(f"skipping {where}") for m in skipping) == 1, where
    assert any("duplicate id 'd1' (first on line 1)" in m for m in skipping)
    assert f"skipping {qrels}:14: qrels doc id 'd99' (query 'q1') is not in {corpus}" in skipping
    assert f"skipping {qrels}:15: qrels query id 'q77' is not in {queries}" in skipping
    assert f"skipping {qrels}:16: query without positives: 'q5' has no judgement >= 1" in skipping
    # the end-of-read summary adds up to the same total
    summary = [r for r in caplog.records if r.getMessage().startswith("lenient read skipped ")]
    assert sum(r.args[0] for r in summary) == 9


def test_beir_set_lenient_clean_input_skips_nothing(tmp_path, caplog, policies):
    root = write_beir(tmp_path / "s")
    with caplog.at_level(logging.WARNING, logger="dr"):
        rs = beir_set("s", str(root), "test", strict=False)
    assert len(rs.corpus) == 12 and len(rs.queries) == 4
    assert sum(policies[0].skipped.values()) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_read_beir_corpus_lenient(tmp_path):
    path = _write(tmp_path / "corpus.jsonl", [
        GOOD, "{oops", b'{"_id": "x", "text": "\xfe"}', {"_id": "e", "text": ""}, GOOD | {"_id": "z"},
    ])
    policy = ReadPolicy(strict=False)
    assert [r[:2] for r in read_beir_corpus(path, policy)] == [(1, "g"), (5, "z")]
    assert sum(policy.skipped.values()) == 3
    assert policy.skipped["corpus.jsonl: malformed line"] == 1
    assert policy.skipped["corpus.jsonl: not UTF-8"] == 1
    assert policy.skipped["corpus.jsonl: empty text for id ..."] == 1
