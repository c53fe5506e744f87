"""The prepared teacher table: same answers as the line reader, cached by content, shared by processes."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

import dr.data.teacher as teacher_module
from dr.data.errors import DataFormatError, ReadPolicy
from dr.data.teacher import _read_exact, read_teacher_scores
from dr.data.teacher_table import COLUMNS, TableScores, read_fast


def _random_file(path, fmt: str, seed: int = 0, queries: int = 30, lines: int = 400, numeric: bool = False):
    """Ids of mixed kinds (numbers of different lengths, words, non-ASCII; or only integers, which are
    read as numbers), repeated (qid, pid) with the same score, a positive shared by many lines."""
    rng = np.random.default_rng(seed)
    qids = [str(x) for x in rng.choice(5000, queries // 2, replace=False)]
    pids = [str(x) for x in rng.choice(100000, 200, replace=False)] + ["10", "9", "0"]
    if not numeric:
        qids += [f"q-{i}é" for i in range(queries // 2)]
        pids += ["p", "P", "pé"]
    value = {}

    def score(q, p):
        return value.setdefault((q, p), round(float(rng.normal()) * 5, 4))

    out = []
    for _ in range(lines):
        q = qids[rng.integers(len(qids))]
        pos = pids[hash(q) % 7]
        neg = pids[rng.integers(len(pids))]
        if neg == pos:
            continue
        if fmt == "tasb":
            out.append(f"{score(q, pos)}\t{score(q, neg)}\t{q}\t{pos}\t{neg}\n")
        elif fmt == "tsv":
            out.append(f"{q}\t{neg}\t{score(q, neg)}\n")
        else:
            out.append(json.dumps({"qid": q, "pid": neg, "score": score(q, neg)}) + "\n")
    path.write_text("".join(out), encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "fmt", "numeric"), [
    ("t.tsv", "tasb", False), ("t.tsv", "tasb", True), ("t.tsv", "tsv", False), ("t.tsv", "tsv", True),
    ("t.jsonl", "jsonl", False),
])
def test_table_answers_like_the_text_file(tmp_path, name, fmt, numeric):
    path = _random_file(tmp_path / name, fmt, numeric=numeric)
    scores, pairs = _read_exact(path, ReadPolicy(), fmt, fmt == "jsonl")
    teacher = read_teacher_scores(path, fmt="auto")
    assert isinstance(teacher.scores, TableScores)
    assert teacher.scores == scores and dict(teacher.pairs) == pairs
    assert len(teacher) == sum(map(len, scores.values()))
    assert sorted(teacher.scores) == sorted(scores) and len(teacher.scores) == len(scores)
    for qid, by_pid in scores.items():
        assert teacher.pairs.get(qid) == pairs.get(qid)
        for pid, value in by_pid.items():
            assert teacher.score(qid, pid) == value
        assert teacher.score(qid, "absent") is None and teacher.score(qid + "x", next(iter(by_pid))) is None
    assert "absent" not in teacher.scores and teacher.scores.get("absent") is None
    assert teacher.passages(sorted(scores)[:3]) == sorted({p for q in sorted(scores)[:3] for p in scores[q]})


def test_fast_and_line_readers_build_the_same_arrays(tmp_path):
    """A clean TSV goes through pyarrow's parser; the same file with one blank line of spaces goes line by
    line. Both must give identical arrays."""
    clean = _random_file(tmp_path / "clean.tsv", "tasb", lines=2000)
    (tmp_path / "fast").mkdir()
    assert read_fast(clean, "tasb", 1e-4, tmp_path / "fast") is None
    (tmp_path / "spaced.tsv").write_text(clean.read_text() + "  \n")
    assert isinstance(read_fast(tmp_path / "spaced.tsv", "tasb", 1e-4, tmp_path / "fast"), str)
    built = {}
    for path in (clean, tmp_path / "spaced.tsv"):
        teacher = read_teacher_scores(path)
        built[path.name] = teacher.scores.table
    meta = [json.loads(p.read_text())["read"] for p in sorted((tmp_path / "dr-cache" / "teacher").glob("*/meta.json"))]
    assert sorted(meta) == ["fast", "lines"]
    for column in COLUMNS:
        a, b = getattr(built["clean.tsv"], column), getattr(built["spaced.tsv"], column)
        np.testing.assert_array_equal(a, b, err_msg=column)


def test_integer_ids_that_are_not_canonical_stay_strings(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("1\t07\t1.5\n1\t7\t2.5\n01\t7\t3.0\n")
    teacher = read_teacher_scores(path)
    assert teacher.scores == {"1": {"07": 1.5, "7": 2.5}, "01": {"7": 3.0}}


@pytest.mark.parametrize(("text", "line", "words"), [
    ("9.5\t1\tq\ta\tb\n" * 50 + "9.0\t2\tq\ta\tc\n", 51, "conflicting scores"),
    ("9.5\t1\tq\ta\tb\n" * 50 + "9.5\tx\tq\ta\tc\n", 51, "not a finite number"),
    ("9.5\t1\tq\ta\tb\n" * 50 + "9.5\t1\tq\ta\n", 51, "expected 5"),
    ("9.5\t1\tq\ta\tb\n" * 50 + "9.5\t1\t \ta\tc\n", 51, "empty"),
    ("q\ta\t1\n" * 9 + "q\tb\tinf\n", 10, "not a finite number"),
])
def test_bad_lines_in_a_big_clean_looking_file_name_the_line(tmp_path, text, line, words):
    path = tmp_path / "t.tsv"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=f"t.tsv:{line}: .*{words}"):
        read_teacher_scores(path)
    assert not list((tmp_path / "dr-cache" / "teacher").glob("*/meta.json"))  # nothing cached


def test_prepared_once_then_mapped_and_changed_file_prepared_again(tmp_path, monkeypatch):
    path = tmp_path / "t.tsv"
    path.write_text("9.5\t1\tq\ta\tb\n")
    assert read_teacher_scores(path).score("q", "b") == 1.0
    prepare = teacher_module._prepare
    monkeypatch.setattr(teacher_module, "_prepare", lambda *a: pytest.fail("prepared again"))
    again = read_teacher_scores(path)
    assert again.score("q", "b") == 1.0 and again.pairs == {"q": [("a", "b")]}
    path.write_text("9.5\t2\tq\ta\tb\n7\t1\tr\ta\tc\n")  # another size and mtime: another key
    monkeypatch.setattr(teacher_module, "_prepare", prepare)
    changed = read_teacher_scores(path)
    assert changed.score("q", "b") == 2.0 and changed.score("r", "c") == 1.0
    assert len(list((tmp_path / "dr-cache" / "teacher").glob("*/meta.json"))) == 2
    # another format or strictness reads the file differently: its own entry
    assert read_teacher_scores(path, strict=False).score("r", "c") == 1.0
    assert len(list((tmp_path / "dr-cache" / "teacher").glob("*/meta.json"))) == 3


def test_lenient_skips_are_reported_again_from_the_table(tmp_path, caplog):
    path = tmp_path / "t.tsv"
    path.write_text("9.5\t1\tq\ta\tb\nx\t1\tq\ta\tc\n8\t0\tp\tg\th\n")
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            teacher = read_teacher_scores(path, strict=False)
        assert teacher.scores == {"q": {"a": 9.5, "b": 1.0}, "p": {"g": 8.0, "h": 0.0}}
        assert "lenient read skipped 1 record(s): t.tsv: score ... is not a finite number" in caplog.text


_CHILD = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from dr.data.teacher import read_teacher_scores
t = read_teacher_scores(sys.argv[1])
print(json.dumps([t.score("q", "b"), len(t)]))
"""


def test_concurrent_processes_prepare_once(tmp_path):
    path = _random_file(tmp_path / "t.tsv", "tasb", lines=3000)
    (tmp_path / "scores.tsv").write_text(path.read_text() + "9.5\t1\tq\ta\tb\n")
    env = {**os.environ, "DR_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "scores.tsv")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    assert len({o for o, _ in outs}) == 1 and json.loads(outs[0][0])[0] == 1.0
    entries = [p for p in (tmp_path / "cache" / "teacher").iterdir() if p.is_dir()]
    assert len(entries) == 1  # one table, no temporary directory left
    assert sum("(prepared at" in e for _, e in outs) == 1, [e for _, e in outs]


def test_sparse_and_negative_integer_ids(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("1.5\t0.5\t-3\t5\t-7\n2.5\t1.0\t1000000000000\t5\t99999999999\n1.5\t0.25\t-3\t5\t0\n")
    assert read_fast(path, "tasb", 1e-4, tmp_path) is None
    scores, pairs = _read_exact(path, ReadPolicy(), "tasb", False)
    teacher = read_teacher_scores(path)
    assert teacher.scores == scores and dict(teacher.pairs) == pairs


class _AnyCorpus:
    def __contains__(self, docid: str) -> bool:
        return True


def test_tas_schedule_draws_the_same_batches_from_the_table_as_from_dicts(tmp_path):
    from dr.data.sources import RetrievalSet
    from dr.data.tas import TasConfig, TasSchedule
    from dr.data.teacher import TeacherScores

    path = _random_file(tmp_path / "t.tsv", "tasb", lines=1500, queries=40)
    scores, pairs = _read_exact(path, ReadPolicy(), "tasb", False)
    qrels = {q: {p: 1 for p, _ in listed} for q, listed in pairs.items()}
    train_set = RetrievalSet("toy", _AnyCorpus(), {q: f"query {q}" for q in qrels}, qrels)
    qids = sorted(qrels)
    schedules = [TasSchedule(train_set, qids, teacher, None, TasConfig(clusters=0), 2, 8, seed=5)
                 for teacher in (read_teacher_scores(path), TeacherScores(scores, pairs, str(path)))]
    assert schedules[0].qids == schedules[1].qids
    for step in range(20):
        a, b = (s.batch(step) for s in schedules)
        assert [(g.qid, g.passage_ids, g.teacher) for g in a] == [(g.qid, g.passage_ids, g.teacher) for g in b]
