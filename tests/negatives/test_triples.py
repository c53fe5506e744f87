"""negatives=triples: MS MARCO id triples and text triples, good and bad lines."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dr.data.corpus import CorpusStore
from dr.data.errors import DataFormatError, ReadPolicy
from dr.data.sources import RetrievalSet, beir_set
from dr.negatives.triples import TriplesNegatives

FIXTURE = Path(__file__).parents[1] / "fixtures" / "msmarco_triples_sample.tsv"


@pytest.fixture
def train(train_data_dir):
    """36 queries tdN-j, each with the one positive dN, over passages d1..d12."""
    return beir_set("scifact-train", str(train_data_dir / "scifact"), "train")


def _write(tmp_path, text: str, name: str = "triples.tsv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_id_triples_grouped_per_query_distinct_and_capped(train, tmp_path):
    path = _write(tmp_path, "td1-0\td1\td2\ntd1-0\td1\td3\ntd2-0\td2\td1\ntd1-0\td1\td2\ntd1-0\td1\td4\n")
    qids = ["td1-0", "td2-0", "td3-0"]
    negs = TriplesNegatives(str(path)).negatives(train, qids)
    assert negs == {"td1-0": ["d2", "d3", "d4"], "td2-0": ["d1"], "td3-0": []}
    assert TriplesNegatives(str(path), max_per_query=2).negatives(train, qids)["td1-0"] == ["d2", "d3"]


def test_queries_held_out_are_ignored_and_strangers_counted(train, tmp_path, caplog):
    path = _write(tmp_path, "td1-0\td1\td2\ntd1-1\td1\td3\nnot-a-query\td1\td4\n")
    with caplog.at_level(logging.WARNING, logger="dr"):
        negs = TriplesNegatives(str(path)).negatives(train, ["td1-0"])  # td1-1: a dev query
    assert negs == {"td1-0": ["d2"]}
    assert "1 query value(s) are no training query" in caplog.text
    other = _write(tmp_path, "not-a-query\td1\td4\n", "other.tsv")
    with pytest.raises(DataFormatError, match=rf"{other}: none of its queries .*'not-a-query'"):
        TriplesNegatives(str(other)).negatives(train, ["td1-0"])


@pytest.mark.parametrize(("text", "line", "words", "lenient"), [
    ("td1-0\td1\td2\ntd1-0\td1\ntd1-0\td1\td3\n", 2, "expected 3 tab-separated fields", ["d2", "d3"]),
    ("td1-0\td1\td2\n\ntd1-0\td1\tnope\n", 3, "passage id 'nope' is not in", ["d2"]),  # the blank line counts
    ("td1-0\td1\td2\ntd1-0\td2\td3\n", 2, "passage 'd2' is not a judged positive of query 'td1-0'", ["d2"]),
    ("td1-0\td1\td2\ntd1-0\td1\td1\n", 2, "passage 'd1' is a positive of query 'td1-0'", ["d2"]),
    ("td1-0\td1\td2\ntd1-0\td1\td 3\n", 2, "malformed line: expected three ids", ["d2"]),
    ("td1-0\td1\td2\ntd1-0\tnope\td3\n", 2, "passage id 'nope' is not in", ["d2"]),
])
def test_bad_id_triples_name_file_and_line(train, tmp_path, text, line, words, lenient):
    path = _write(tmp_path, text)
    with pytest.raises(DataFormatError) as e:
        TriplesNegatives(str(path), format="ids").negatives(train, ["td1-0"])
    assert str(e.value).startswith(f"{path}:{line}: ") and words in str(e.value), str(e.value)
    assert TriplesNegatives(str(path), format="ids", strict=False).negatives(train, ["td1-0"]) == {"td1-0": lenient}


@pytest.fixture
def text_set(tmp_path) -> tuple[RetrievalSet, list[tuple[str, str, str]]]:
    """A collection holding the fixture's passages, and queries with the fixture's query texts."""
    rows = [line.rstrip("\n").split("\t") for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    passages = list(dict.fromkeys(p for _, pos, neg in rows for p in (pos, neg)))
    pid = {text: str(1000 + i) for i, text in enumerate(passages)}
    records = [(i + 1, pid[t], "", t) for i, t in enumerate(passages)]
    corpus = CorpusStore.build(iter(records), "collection.tsv", "triples-fp", ReadPolicy(), tmp_path / "c")
    queries = {str(i): q for i, (q, _, _) in enumerate(rows)}
    qrels = {str(i): {pid[pos]: 1} for i, (_, pos, _) in enumerate(rows)}
    return RetrievalSet("msmarco-sample", corpus, queries, qrels), [(str(i), pid[p], pid[n]) for i, (_, p, n) in
                                                                   enumerate(rows)]


def test_text_triples_resolve_to_collection_ids(text_set):
    train_set, expected = text_set
    qids = sorted(train_set.queries)
    negs = TriplesNegatives(str(FIXTURE)).negatives(train_set, qids)  # auto: texts
    assert negs == {qid: [neg] for qid, _, neg in expected}
    assert len({n for v in negs.values() for n in v}) == 46  # the fixture's distinct negatives


def test_bad_text_triples_name_the_line(text_set, tmp_path):
    train_set, _ = text_set
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    query, pos, _ = lines[4].split("\t")
    bad = _write(tmp_path, "\n".join(lines[:4] + [f"{query}\t{pos}\ta passage that is in no collection"] + lines[5:]))
    message = rf"{bad}:5: negative text 'a passage that is in no collection' is not in"
    with pytest.raises(DataFormatError, match=message):
        TriplesNegatives(str(bad), format="texts").negatives(train_set, sorted(train_set.queries))
    empty = _write(tmp_path, "\n".join(lines[:2] + [f"{query}\t\tx"] + lines[3:]), "empty.tsv")
    with pytest.raises(DataFormatError, match=rf"{empty}:3: empty text in triple"):
        TriplesNegatives(str(empty), format="texts").negatives(train_set, sorted(train_set.queries))
    negs = TriplesNegatives(str(bad), format="texts", strict=False).negatives(train_set, sorted(train_set.queries))
    assert sum(map(len, negs.values())) == 99


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="format"):
        TriplesNegatives("x", format="csv")
    with pytest.raises(ValueError, match="max_per_query"):
        TriplesNegatives("x", max_per_query=0)
