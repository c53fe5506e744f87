"""Teacher scores: TAS-B pair TSV, `qid pid score` TSV and JSONL; strict and lenient; pickles refused."""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from dr.data.errors import DataFormatError
from dr.data.teacher import TeacherScores, read_teacher_scores, write_teacher_scores

TASB = "9.5\t-1.25\t1\t10\t11\n9.5\t2.5\t1\t10\t12\n\n7.0\t0.5\t2\t20\t21\n"
TSV = "1\t10\t9.5\n1\t11\t-1.25\n1\t12\t2.5\n2\t20\t7.0\n2\t21\t0.5\n"
JSONL = "".join(
    json.dumps(r) + "\n"
    for r in [
        {"qid": 1, "pid": 10, "score": 9.5},
        {"qid": "1", "pid": "11", "score": -1.25},
        {"qid": 1, "pid": "12", "score": 2.5},
        {"qid": 2, "pid": 20, "score": 7},
        {"qid": "2", "pid": 21, "score": "0.5"},
    ]
)
SCORES = {"1": {"10": 9.5, "11": -1.25, "12": 2.5}, "2": {"20": 7.0, "21": 0.5}}


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("bertbase_cat_msmarco_train_scores.tsv", TASB, "tasb"),
        ("bertbase_cat_msmarco_train_scores.tsv", TASB, "auto"),
        ("scores.tsv.gz", TASB, "auto"),
        ("scores.tsv", TSV, "tsv"),
        ("scores.txt", TSV, "auto"),
        ("scores.tsv.gz", TSV, "auto"),
        ("scores.jsonl", JSONL, "jsonl"),
        ("scores.jsonl", JSONL, "auto"),
        ("scores.json", JSONL, "auto"),
        ("scores.jsonl.gz", JSONL, "auto"),
        ("scores.data", JSONL, "jsonl"),
    ],
)
def test_formats(tmp_path, name, text, fmt):
    teacher = read_teacher_scores(_write(tmp_path / name, text), fmt=fmt)
    assert isinstance(teacher, TeacherScores)
    assert teacher.scores == SCORES
    assert len(teacher) == 5
    assert teacher.score("1", "11") == -1.25
    assert teacher.score("1", "20") is None and teacher.score("3", "10") is None
    assert teacher.source == str(tmp_path / name)
    if text is TASB:
        assert teacher.pairs == {"1": [("10", "11"), ("10", "12")], "2": [("20", "21")]}
    else:
        assert teacher.pairs == {}


def test_tasb_repeat_within_tolerance_is_the_same_score(tmp_path):
    path = _write(tmp_path / "t.tsv", "9.5\t1\tq\ta\tb\n9.50004\t2\tq\ta\tc\n")
    teacher = read_teacher_scores(path)
    assert teacher.scores == {"q": {"a": 9.5, "b": 1.0, "c": 2.0}}
    assert teacher.pairs == {"q": [("a", "b"), ("a", "c")]}


@pytest.mark.parametrize(
    ("name", "text", "line", "words"),
    [
        ("t.tsv", "9.5\t1\tq\ta\tb\n9.0\t2\tq\ta\tc\n", 2, "conflicting scores"),  # pos re-scored
        ("t.tsv", "9.5\t1\tq\ta\tb\n\n9.5\tx\tq\ta\tc\n", 3, "not a finite number"),
        ("t.tsv", "9.5\t1\tq\ta\tb\nnan\t1\tq\ta\tc\n", 2, "not a finite number"),
        ("t.tsv", "9.5\t1\tq\ta\tb\n9.5\t1\tq\ta\n", 2, "expected 5"),  # tasb then 4 fields
        ("t.tsv", "9.5\t1\tq\ta\tb\nq\ta\t1\n", 2, "expected 5"),  # tasb then a tsv line
        ("t.tsv", "q\ta\t1\nq\tb\tinf\n", 2, "not a finite number"),
        ("t.tsv", "q\ta\t1\nq\tb\t2\nq\ta\t1.5\n", 3, "conflicting scores"),
        ("t.tsv", "q\ta\t1\nq\t\t2\n", 2, "empty"),
        ("t.tsv", "q\ta\tb\t1\n", 1, "expected 5 or 3"),  # auto cannot tell the format
        ("t.jsonl", '{"qid": 1, "pid": 2, "score": 1}\n{"qid": 1, "score": 1}\n', 2, "missing key(s) 'pid'"),
        ("t.jsonl", '{"qid": 1, "pid": 2, "score": 1}\n{"qid": 1, "pid": 3, "score": NaN}\n', 2, "finite"),
        ("t.jsonl", '{"qid": 1, "pid": 2, "score": 1}\n{"qid": 1, "pid": 3, "score": true}\n', 2, "finite"),
        ("t.jsonl", '{"qid": 1, "pid": 2, "score": 1}\n{"qid": 1, "pid": 2, "score": 3}\n', 2, "conflicting"),
        ("t.jsonl", '{"qid": 1, "pid": 2, "score": 1}\n{"qid": [1], "pid": 3, "score": 1}\n', 2, "strings"),
        ("t.jsonl", '{"qid": 1, "pid": 2, "score": 1}\n{"qid": 1, "pid": 3\n', 2, "invalid JSON"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, name, text, line, words):
    path = _write(tmp_path / name, text)
    with pytest.raises(DataFormatError, match=f"{name}:{line}: ") as err:
        read_teacher_scores(path)
    assert words in str(err.value)
    assert err.value.line == line


def test_explicit_format_mismatch(tmp_path):
    path = _write(tmp_path / "t.tsv", TASB)
    with pytest.raises(DataFormatError, match=r"t\.tsv:1: .*expected 3"):
        read_teacher_scores(path, fmt="tsv")


def test_lenient_skips_bad_lines_and_keeps_good_ones(tmp_path, caplog):
    text = "9.5\t1\tq\ta\tb\n9.0\t2\tq\ta\tc\nx\t1\tq\td\te\n3\t4\tq\tf\n8\t0\tp\tg\th\n9.5\t-1\tq\ta\ti\n"
    path = _write(tmp_path / "t.tsv", text)
    with caplog.at_level(logging.WARNING):
        teacher = read_teacher_scores(path, strict=False)
    assert teacher.scores == {"q": {"a": 9.5, "b": 1.0, "i": -1.0}, "p": {"g": 8.0, "h": 0.0}}
    assert teacher.pairs == {"q": [("a", "b"), ("a", "i")], "p": [("g", "h")]}
    assert "lenient read skipped" in caplog.text


@pytest.mark.parametrize("text", ["", "\n \n", "q\ta\tnan\n"])
def test_no_scores_is_an_error(tmp_path, text):
    path = _write(tmp_path / "t.tsv", text)
    with pytest.raises(DataFormatError, match="no teacher scores"):
        read_teacher_scores(path, strict=False)


@pytest.mark.parametrize("name", ["scores.pkl", "scores.pickle", "scores.pt", "scores.npy", "scores.pkl.gz"])
def test_pickles_are_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ValueError, match="arbitrary code") as err:
        read_teacher_scores(path)
    assert "tasb" in str(err.value) and "JSONL" in str(err.value)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown teacher score format"):
        read_teacher_scores(_write(tmp_path / "t.tsv", TSV), fmt="csv")
    with pytest.raises(FileNotFoundError):
        read_teacher_scores(tmp_path / "absent.tsv")


@pytest.mark.parametrize("name", ["out/scores.tsv", "out/scores.tsv.gz"])
def test_write_read_roundtrip(tmp_path, name):
    scores = {"1": {"10": 0.1 + 0.2, "11": -1e-9}, "q 2": {"p": 12345.678901234, "r": 3.0}}
    path = tmp_path / name
    write_teacher_scores(path, scores)
    assert read_teacher_scores(path).scores == scores
    assert not list(path.parent.glob("*.tmp"))


def test_write_refuses_what_it_cannot_read_back(tmp_path):
    path = tmp_path / "scores.tsv"
    write_teacher_scores(path, {"q": {"a": 1.0}})
    with pytest.raises(ValueError):
        write_teacher_scores(path, {"q": {"a": float("nan")}})
    with pytest.raises(ValueError):
        write_teacher_scores(path, {"q\t1": {"a": 1.0}})
    assert read_teacher_scores(path).scores == {"q": {"a": 1.0}}  # the old file is intact
    assert not list(tmp_path.glob("*.tmp"))
