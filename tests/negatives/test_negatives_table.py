"""negatives=file through the prepared table: same lists as the line reader, errors at file:line, cached."""
from __future__ import annotations

import logging

import numpy as np
import pytest

import dr.negatives.file as file_module
from dr.data.errors import DataFormatError, ReadPolicy
from dr.data.id_lists import read_tsv_fast
from dr.data.sources import beir_set
from dr.negatives.file import FileNegatives, prepare_negatives, read_negatives


@pytest.fixture
def train(train_data_dir):
    return beir_set("scifact-train", str(train_data_dir / "scifact"), "train")


def _lists(seed: int = 0, queries: int = 60) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    pids = [str(x) for x in rng.choice(10**6, 300, replace=False)] + ["p", "pé", "10", "9"]
    return {f"q{i}" if i % 3 else str(i * 7): [pids[j] for j in rng.integers(0, len(pids), rng.integers(0, 12))]
            for i in range(queries)}


@pytest.mark.parametrize("variant", ["clean", "blank_lines", "spaces", "jsonl"])
def test_table_holds_what_the_line_reader_reads(tmp_path, variant):
    lists = _lists()
    if variant == "jsonl":
        import json

        path = tmp_path / "n.jsonl"
        path.write_text("".join(json.dumps({"qid": q, "negatives": v}) + "\n" for q, v in lists.items()))
    else:
        path = tmp_path / "n.tsv"
        sep = {"clean": " ", "blank_lines": " ", "spaces": "  "}[variant]
        rows = [f"{q}\t{sep.join(v)}" + (" " if variant == "spaces" else "") for q, v in lists.items()]
        path.write_text(("\n\n" if variant == "blank_lines" else "\n").join(rows) + "\n")
    expected, lines = read_negatives(path, ReadPolicy())
    assert expected == lists
    fast = read_tsv_fast(path) if variant != "jsonl" else "jsonl"
    assert isinstance(fast, dict) == (variant in ("clean", "spaces"))
    table = prepare_negatives(path, ReadPolicy())
    assert sorted(table.query_ids()) == sorted(lists)
    for qid, found in lists.items():
        assert table.get(qid) == found
        assert table.line_of(qid) == lines[qid]
    assert table.get("absent") is None


def test_negatives_mapping_and_errors_at_the_line_of_a_fast_read_file(train, tmp_path):
    qids = sorted(train.queries)
    path = tmp_path / "n.tsv"
    def doc(q: str, shift: int) -> str:  # never the query's own passage dN (queries are tdN-j)
        return f"d{(int(q[2:].split('-')[0]) + shift - 1) % 12 + 1}"

    rows = [f"{q}\t{doc(q, 1)} {doc(q, 2)}" for q in qids]
    rows[5] += f" {doc(qids[5], 0)}"  # a positive: skipped (lenient) at line 6
    path.write_text("\n".join(rows) + "\n")
    negs = FileNegatives(str(path), strict=False).negatives(train, qids)
    expected, _ = read_negatives(path, ReadPolicy())
    positives = {q: {d for d, g in train.qrels[q].items() if g > 0} for q in qids}
    want = {q: [p for p in expected[q] if p not in positives[q]] for q in qids}
    assert negs == want and dict(negs.items()) == want and len(negs) == len(qids)
    with pytest.raises(KeyError):
        negs["not-a-training-query"]
    bad = tmp_path / "bad.tsv"
    rows[5] = f"{qids[5]}\t{doc(qids[5], 1)}"
    bad.write_text("\n".join(rows[:20] + [f"{qids[20]}\t{doc(qids[20], 1)} nope"] + rows[21:]) + "\n")
    with pytest.raises(DataFormatError, match=rf"{bad}:21: passage id 'nope' is not in"):
        FileNegatives(str(bad)).negatives(train, qids)


def test_prepared_once_and_again_when_the_file_changes(train, tmp_path, monkeypatch, caplog):
    path = tmp_path / "n.tsv"
    path.write_text("td1-0\td2 d3\ntd1-1\td4\nbroken line\n")
    first = FileNegatives(str(path), strict=False).negatives(train, ["td1-0", "td1-1"])
    assert first == {"td1-0": ["d2", "d3"], "td1-1": ["d4"]}
    monkeypatch.setattr(file_module, "read_negatives", lambda *a: pytest.fail("read again"))
    monkeypatch.setattr(file_module, "read_tsv_fast", lambda *a: pytest.fail("read again"))
    with caplog.at_level(logging.WARNING):
        again = FileNegatives(str(path), strict=False).negatives(train, ["td1-0", "td1-1"])
    assert again == first
    assert "lenient read skipped 1 record(s): n.tsv: malformed line" in caplog.text  # counted again
    monkeypatch.undo()
    path.write_text("td1-0\td5\n")
    assert FileNegatives(str(path)).negatives(train, ["td1-0"]) == {"td1-0": ["d5"]}
