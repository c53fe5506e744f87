"""MS MARCO files: collection.tsv, queries/topics TSV, text and id triples, and msmarco_set on them."""
from __future__ import annotations

import gzip
import logging
import re
from pathlib import Path

import pytest
from conftest import FIXTURES

from dr.data.corpus import CorpusStore
from dr.data.errors import DataFormatError, ReadPolicy
from dr.data.msmarco import read_collection, read_id_triples, read_queries_tsv, read_text_triples
from dr.data.sources import msmarco_set

TRIPLES = FIXTURES / "msmarco_triples_sample.tsv"
COLLECTION = FIXTURES / "msmarco_collection_sample.tsv"


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# -------------------------------------------------------------------------------------------- collection


def test_collection_two_columns(tmp_path):
    path = _write(tmp_path / "collection.tsv", "0\tfirst passage\n1\tsecond passage\n\n12\t third \n")
    assert list(read_collection(path, ReadPolicy())) == [
        (1, "0", "", "first passage"),
        (2, "1", "", "second passage"),
        (4, "12", "", " third "),
    ]


def test_collection_three_columns_detected_from_every_row(tmp_path):
    path = _write(tmp_path / "collection.tsv", "7\tA title\tThe body.\r\n9\t\tbody only\r\n")
    assert list(read_collection(path, ReadPolicy())) == [
        (1, "7", "A title", "The body."),
        (2, "9", "", "body only"),
    ]
    assert list(read_collection(path, ReadPolicy(), layout="pid_title_text")) == list(
        read_collection(path, ReadPolicy()))


def test_collection_extra_column_in_a_pid_text_file_is_an_error(tmp_path):
    # a stray tab in one passage of a (pid, text) file: not a title
    path = _write(tmp_path / "collection.tsv", "1\tfirst\n2\tsecond\n3\ta\tstray tab\n4\tfourth\n")
    with pytest.raises(DataFormatError) as e:
        list(read_collection(path, ReadPolicy()))
    assert str(e.value).startswith(f"{path}:3: malformed line: expected 2 tab-separated fields (pid, text), got 3")
    assert e.value.line == 3
    policy = ReadPolicy(strict=False)
    assert list(read_collection(path, policy)) == [(1, "1", "", "first"), (2, "2", "", "second"),
                                                   (4, "4", "", "fourth")]
    assert dict(policy.skipped) == {"collection.tsv: malformed line": 1}


def test_collection_missing_title_in_a_titled_file_is_an_error(tmp_path):
    # the majority layout wins: the one 2-column row is the odd one out, not the three titled rows
    path = _write(tmp_path / "collection.tsv", "1\tT1\tone\n2\tT2\ttwo\n3\tno title\n4\tT4\tfour\n")
    with pytest.raises(DataFormatError, match=re.escape(
            f"{path}:3: malformed line: expected 3 tab-separated fields (pid, title, text), got 2")):
        list(read_collection(path, ReadPolicy()))
    assert [r[1] for r in read_collection(path, ReadPolicy(strict=False))] == ["1", "2", "4"]


def test_collection_declared_layout(tmp_path):
    path = _write(tmp_path / "collection.tsv", "1\tT1\tone\n2\tT2\ttwo\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:1: malformed line: expected 2 tab-separated "
                                                        "fields (pid, text), got 3")):
        list(read_collection(path, ReadPolicy(), layout="pid_text"))
    two = _write(tmp_path / "two.tsv", "1\tone\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{two}:1: malformed line: expected 3 tab-separated "
                                                        "fields (pid, title, text), got 2")):
        list(read_collection(two, ReadPolicy(), layout="pid_title_text"))
    with pytest.raises(ValueError, match="layout must be auto, pid_text or pid_title_text, got 'tsv'"):
        list(read_collection(two, ReadPolicy(), layout="tsv"))


def test_msmarco_set_layout_is_part_of_the_cache_key(tmp_path):
    coll = _write(tmp_path / "collection.tsv", "10\tT\tten\n20\tU\ttwenty\n")
    queries = _write(tmp_path / "queries.tsv", "1\tq one\n")
    qrels = _write(tmp_path / "qrels.tsv", "1\t0\t20\t1\n")
    rs = msmarco_set("titled", str(coll), str(queries), str(qrels), cache_dir=str(tmp_path / "c"))
    assert rs.corpus.text("20") == "U twenty"
    with pytest.raises(DataFormatError, match=f"{coll}:1: malformed line"):
        msmarco_set("plain", str(coll), str(queries), str(qrels), layout="pid_text", cache_dir=str(tmp_path / "c"))


def test_collection_gzip(tmp_path):
    path = tmp_path / "collection.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("100\tgzipped passage one\n200\tgzipped passage two\n")
    assert list(read_collection(path, ReadPolicy())) == [
        (1, "100", "", "gzipped passage one"),
        (2, "200", "", "gzipped passage two"),
    ]


def test_real_collection_fixture():
    rows = list(read_collection(COLLECTION, ReadPolicy()))
    assert len(rows) == 89
    assert rows[0][:3] == (1, "0", "")
    assert rows[0][3].startswith("The presence of communication amid scientific minds")
    assert rows[-1][:2] == (89, "99")
    pids = {r[1] for r in rows}
    assert len(pids) == 89
    # the sample has gaps: 41-44, 60-63 and 79-81 are absent
    assert pids == {str(i) for i in range(100)} - {str(i) for i in (41, 42, 43, 44, 60, 61, 62, 63, 79, 80, 81)}


def test_real_collection_into_store(tmp_path):
    policy = ReadPolicy()
    store = CorpusStore.build(read_collection(COLLECTION, policy), COLLECTION, "real-sample", policy)
    assert len(store) == 89
    assert "45" in store and "41" not in store
    assert store.text("0").startswith("The presence of communication amid scientific minds")
    assert store.text("1").startswith("The Manhattan Project and its atomic bomb helped bring an end to World War II.")


@pytest.mark.parametrize(
    ("bad_line", "words"),
    [
        ("lonely-id", "malformed line: expected 2 tab-separated fields (pid, text), got 1"),
        ("1\ta\tb\tc", "malformed line: expected 2 tab-separated fields (pid, text), got 4"),
        ("\tno id", "malformed line: empty id"),
        ("5\t   ", "empty text for id '5'"),
        ("5\t\t", "malformed line: expected 2 tab-separated fields (pid, text), got 3"),
        (b"5\tna\xefve", "not UTF-8"),
    ],
)
def test_collection_bad_line(tmp_path, bad_line, words):
    bad = bad_line if isinstance(bad_line, bytes) else bad_line.encode()
    path = _write(tmp_path / "collection.tsv", b"1\tgood\n\n2\tgood\n" + bad + b"\n3\tgood\n")
    with pytest.raises(DataFormatError) as e:
        list(read_collection(path, ReadPolicy()))
    assert str(e.value).startswith(f"{path}:4: ")  # the blank line 2 still counts
    assert words in str(e.value)
    assert e.value.line == 4

    policy = ReadPolicy(strict=False)
    assert [r[1] for r in read_collection(path, policy)] == ["1", "2", "3"]
    assert sum(policy.skipped.values()) == 1


# ----------------------------------------------------------------------------------------------- queries


def test_queries_tsv(tmp_path):
    path = _write(tmp_path / "queries.dev.small.tsv",
                  "1048585\twhat is paula deen's brother\n2\tAndorra  population \n")
    assert read_queries_tsv(path, ReadPolicy()) == {
        "1048585": "what is paula deen's brother",
        "2": "Andorra  population ",
    }


def test_trec_topics_tab_separated(tmp_path):
    path = _write(tmp_path / "topics.dl19-passage.txt",
                  "19335\tanthropological definition of environment\n47923\taxon terminals or synaptic knob definition\n")
    assert read_queries_tsv(path, ReadPolicy()) == {
        "19335": "anthropological definition of environment",
        "47923": "axon terminals or synaptic knob definition",
    }


@pytest.mark.parametrize(
    ("bad_line", "words"),
    [
        ("3\ttoo\tmany", "malformed line: expected 2 tab-separated fields, got 3"),
        ("3 space separated", "malformed line: expected 2 tab-separated fields, got 1"),
        ("1\trepeated id", "duplicate id '1'"),
        ("3\t  ", "empty text for query '3'"),
        (" \tno id", "malformed line: empty id"),
        (b"3\t\x80bad", "not UTF-8: byte 0x80 at column 3"),
    ],
)
def test_queries_bad_line(tmp_path, bad_line, words):
    bad = bad_line if isinstance(bad_line, bytes) else bad_line.encode()
    path = _write(tmp_path / "queries.tsv", b"1\tone\n2\ttwo\n" + bad + b"\n4\tfour\n")
    with pytest.raises(DataFormatError) as e:
        read_queries_tsv(path, ReadPolicy())
    assert str(e.value).startswith(f"{path}:3: ")
    assert words in str(e.value)

    policy = ReadPolicy(strict=False)
    assert read_queries_tsv(path, policy) == {"1": "one", "2": "two", "4": "four"}
    assert sum(policy.skipped.values()) == 1


# ----------------------------------------------------------------------------------------------- triples


def test_real_text_triples_fixture():
    triples = list(read_text_triples(TRIPLES, ReadPolicy()))
    assert len(triples) == 100
    query, pos, neg = triples[0]
    assert query.startswith("is a little caffeine ok during pregnancy")
    assert pos.startswith("We don")
    assert "limit caffeine to 200 milligrams each day" in pos
    assert neg.startswith("It is generally safe for pregnant women to eat chocolate")
    assert triples[-1][0] == "what size can a carry on duffle bag be when flying"
    assert len({t[0] for t in triples}) == 100
    assert len({t[1] for t in triples}) == 100
    assert len({t[2] for t in triples}) == 46


def test_text_triples_bad_lines(tmp_path):
    path = _write(tmp_path / "triples.tsv", "q\tpos\tneg\nq\tonly two\nq\t \tneg\nq2\tpos2\tneg2\n")
    with pytest.raises(DataFormatError) as e:
        list(read_text_triples(path, ReadPolicy()))
    assert str(e.value).startswith(f"{path}:2: malformed line: expected 3 tab-separated fields, got 2")

    policy = ReadPolicy(strict=False)
    assert list(read_text_triples(path, policy)) == [("q", "pos", "neg"), ("q2", "pos2", "neg2")]
    assert dict(policy.skipped) == {"triples.tsv: malformed line": 1, "triples.tsv: empty text in triple": 1}


def test_id_triples(tmp_path):
    path = _write(tmp_path / "qidpidtriples.train.full.2.tsv", "400296\t1540783\t3518497\n662731\t193249\t2975302\n")
    assert list(read_id_triples(path, ReadPolicy())) == [
        ("400296", "1540783", "3518497"),
        ("662731", "193249", "2975302"),
    ]


@pytest.mark.parametrize(
    "bad_line", ["1\t2", "1\t2\t3\t4", "1\t\t3", "1\t2 x\t3"],
)
def test_id_triples_bad_line(tmp_path, bad_line):
    path = _write(tmp_path / "ids.tsv", f"1\t2\t3\n{bad_line}\n4\t5\t6\n")
    with pytest.raises(DataFormatError) as e:
        list(read_id_triples(path, ReadPolicy()))
    assert str(e.value).startswith(f"{path}:2: malformed line")

    policy = ReadPolicy(strict=False)
    assert list(read_id_triples(path, policy)) == [("1", "2", "3"), ("4", "5", "6")]
    assert sum(policy.skipped.values()) == 1


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        list(read_collection(tmp_path / "nope.tsv", ReadPolicy()))


# ----------------------------------------------------------------------------------------------- msmarco_set


def _pool(tiny_data_dir: Path) -> dict[str, str]:
    return {
        "collection": str(tiny_data_dir / "msmarco-dl19-pool" / "collection.tsv"),
        "queries": str(tiny_data_dir / "trec-dl-2019" / "topics.dl19-passage.txt"),
        "qrels": str(tiny_data_dir / "trec-dl-2019" / "qrels.dl19-passage.txt"),
    }


def test_msmarco_set_on_dl19_layout(tiny_data_dir):
    rs = msmarco_set("dl19", **_pool(tiny_data_dir), rel_level=2)
    assert rs.rel_level == 2
    assert len(rs.corpus) == 12
    # collection.tsv has no titles, so a passage is its text alone
    assert rs.corpus.text("1") == "Goldfish grow larger in big ponds with clean water and plenty of food."
    assert rs.queries == {
        "1": "do goldfish grow in ponds",
        "2": "what is wifi vs bluetooth",
        "3": "why did the us enter world war one",
        "4": "vitamin d and bone health",
    }
    assert rs.qrels["1"] == {"1": 2, "3": 1, "2": 0}
    assert rs.qrels["4"] == {"10": 2, "11": 3, "12": 1}


def test_msmarco_set_gzip_collection(tmp_path):
    coll = tmp_path / "collection.tsv.gz"
    with gzip.open(coll, "wt", encoding="utf-8") as f:
        f.write("10\tten\n20\ttwenty\n")
    queries = _write(tmp_path / "queries.tsv", "1\tq one\n")
    qrels = _write(tmp_path / "qrels.tsv", "1\t0\t20\t1\n")
    rs = msmarco_set("gz", str(coll), str(queries), str(qrels))
    assert rs.corpus.text("20") == "twenty" and len(rs.corpus) == 2
    assert rs.qrels == {"1": {"20": 1}}


def test_msmarco_set_strict_bad_collection_line(tiny_data_dir):
    parts = _pool(tiny_data_dir)
    with open(parts["collection"], "a") as f:
        f.write("13\n")
    with pytest.raises(DataFormatError) as e:
        msmarco_set("dl19", **parts)
    assert str(e.value).startswith(f"{parts['collection']}:13: malformed line")


def test_msmarco_set_lenient(tiny_data_dir, caplog):
    parts = _pool(tiny_data_dir)
    with open(parts["collection"], "ab") as f:
        f.write(b"13\n14\t\n1\tduplicate of pid 1\n15\t\xff\n")  # lines 13-16: 4 bad
    with open(parts["queries"], "a") as f:
        f.write("1\tdup\n5 no tab\n")  # lines 5-6: 2 bad
    with caplog.at_level(logging.INFO, logger="dr"):
        rs = msmarco_set("dl19", **parts, strict=False)
    assert len(rs.corpus) == 12
    assert rs.corpus.text("1") == "Goldfish grow larger in big ponds with clean water and plenty of food."
    assert rs.queries["1"] == "do goldfish grow in ponds"
    skipping = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping ")]
    assert len(skipping) == 6
    for n in (13, 14, 15, 16):
        assert any(m.startswith(f"skipping {parts['collection']}:{n}: ") for m in skipping), n
    assert any("duplicate id '1' (first on line 1)" in m for m in skipping)
    for n in (5, 6):
        assert any(m.startswith(f"skipping {parts['queries']}:{n}: ") for m in skipping), n
    summary = [r for r in caplog.records if r.getMessage().startswith("lenient read skipped ")]
    assert sum(r.args[0] for r in summary) == 6
