"""Qrels in TREC 4-column (space or tab), MS MARCO 2/3-column TSV and BEIR TSV with a header."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from dr.data.errors import DataFormatError, ReadPolicy
from dr.data.qrels import read_qrels


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("trec-space.txt", "19335 Q0 1017759 0\n19335 Q0 1082489 3\n47923 Q0 1017759 1\n"),
        ("trec-tab.tsv", "19335\t0\t1017759\t0\n19335\t0\t1082489\t3\n47923\t0\t1017759\t1\n"),
        ("trec-crlf.txt", "19335 Q0 1017759 0\r\n\r\n19335  Q0 1082489   3 \r\n47923 Q0 1017759 1\r\n"),
        ("trec-mixed.txt", "19335 \tQ0\t 1017759  0\n19335\t\tQ0 1082489\t3\t\n47923 Q0\t1017759 1\n"),
        ("three.tsv", "19335\t1017759\t0\n19335\t1082489\t3\n47923\t1017759\t1\n"),
        ("beir.tsv", "query-id\tcorpus-id\tscore\n19335\t1017759\t0\n19335\t1082489\t3\n47923\t1017759\t1\n"),
        ("float.tsv", "19335\t1017759\t0.0\n19335\t1082489\t3.0\n47923\t1017759\t1\n"),
    ],
)
def test_formats(tmp_path, name, text):
    qrels = read_qrels(_write(tmp_path / name, text), ReadPolicy())
    assert qrels == {"19335": {"1017759": 0, "1082489": 3}, "47923": {"1017759": 1}}


def test_two_columns_mean_relevant(tmp_path):
    path = _write(tmp_path / "qrels.dev.small.tsv", "1048585\t7187158\n2\t7187157\n2\t7187156\n")
    assert read_qrels(path, ReadPolicy()) == {"1048585": {"7187158": 1}, "2": {"7187157": 1, "7187156": 1}}


def test_other_header_spellings(tmp_path):
    for header in ("qid\tpid\tlabel", "query_id\tdoc_id\trel"):
        path = _write(tmp_path / "h.tsv", f"{header}\nq\td\t2\n")
        assert read_qrels(path, ReadPolicy()) == {"q": {"d": 2}}


def test_negative_grade_kept(tmp_path):
    path = _write(tmp_path / "q.txt", "1 0 a -1\n1 0 b 2\n")
    assert read_qrels(path, ReadPolicy()) == {"1": {"a": -1, "b": 2}}


def test_gzip(tmp_path):
    path = tmp_path / "qrels.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write("1 Q0 a 1\n2 Q0 b 2\n")
    assert read_qrels(path, ReadPolicy()) == {"1": {"a": 1}, "2": {"b": 2}}


@pytest.mark.parametrize(
    ("bad_line", "words"),
    [
        ("1 Q0 d 1 extra", "malformed line: expected 2, 3 or 4 columns, got 5"),
        ("lonely", "malformed line: expected 2, 3 or 4 columns, got 1"),
        ("1\td\thigh", "malformed line: relevance 'high' is not a number"),
        ("1 Q0 d x", "malformed line: relevance 'x' is not a number"),
        ("1\td1\t0", "duplicate judgement for ('1', 'd1')"),
        ("1 Q0 d1 2", "duplicate judgement for ('1', 'd1')"),
        ("query-id\tcorpus-id\tscore", "relevance 'score' is not a number"),  # a header only counts on line 1
        ("\td9\t1", "malformed line: empty id"),
        (" \td9 1", "malformed line: empty id"),  # a leading run of separators is one empty field
        (b"1\td\xe9\t1", "not UTF-8: byte 0xe9 at column 4"),
    ],
)
def test_bad_line(tmp_path, bad_line, words):
    bad = bad_line if isinstance(bad_line, bytes) else bad_line.encode()
    path = _write(tmp_path / "qrels.txt", b"1 Q0 d1 1\n\n1 Q0 d2 0\n" + bad + b"\n2 Q0 d3 1\n")
    with pytest.raises(DataFormatError) as e:
        read_qrels(path, ReadPolicy())
    assert str(e.value).startswith(f"{path}:4: ")
    assert words in str(e.value)
    assert e.value.line == 4

    policy = ReadPolicy(strict=False)
    assert read_qrels(path, policy) == {"1": {"d1": 1, "d2": 0}, "2": {"d3": 1}}
    assert sum(policy.skipped.values()) == 1


def test_lenient_counts_every_bad_line(tmp_path, caplog):
    path = _write(tmp_path / "qrels.txt", b"1 Q0 a 1\n1 Q0 a 1\nfoo\n1 Q0 b z\n\xff\xfe\n2 Q0 c 2\n")
    policy = ReadPolicy(strict=False)
    with caplog.at_level("WARNING", logger="dr"):
        assert read_qrels(path, policy) == {"1": {"a": 1}, "2": {"c": 2}}
    assert sum(policy.skipped.values()) == 4
    assert policy.skipped["qrels.txt: malformed line"] == 2
    assert policy.skipped["qrels.txt: not UTF-8"] == 1
    logged = [r.getMessage() for r in caplog.records]
    for n in (2, 3, 4, 5):
        assert any(m.startswith(f"skipping {path}:{n}: ") for m in logged), n


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        read_qrels(tmp_path / "absent.txt", ReadPolicy())
