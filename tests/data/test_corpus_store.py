"""CorpusStore: id lookup, duplicates, the Arrow cache and its lenient-skip sidecar."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from dr.data.corpus import CorpusStore, source_fingerprint
from dr.data.errors import DataFormatError, ReadPolicy
from dr.data.msmarco import read_collection

RECORDS = [
    (1, "c", "Gamma", "third letter"),
    (2, "a", "", "first letter"),
    (4, "b", "Beta", "second letter"),
    (5, "10", "", "ten"),
    (6, "9", "", "nine"),
]


def _store(tmp_path, records=RECORDS, fp="fp", policy=None, **kw) -> CorpusStore:
    return CorpusStore.build(iter(records), "src.tsv", fp, policy or ReadPolicy(), cache_dir=tmp_path / "c", **kw)


def _never():
    raise AssertionError("the records were read although the cache should have been used")
    yield  # pragma: no cover


def test_rows_of_order_and_dtype(tmp_path):
    store = _store(tmp_path)
    rows = store.rows_of(["b", "c", "9", "a", "10"])
    assert rows.tolist() == [2, 0, 4, 1, 3]
    assert rows.dtype == np.int64
    assert store.rows_of([]).tolist() == []
    assert store.rows_of(["a", "a"]).tolist() == [1, 1]


def test_rows_of_unknown_id(tmp_path):
    store = _store(tmp_path)
    for unknown in (["zz"], ["a", "bb", "c"], ["1"], [""], ["0"]):
        with pytest.raises(KeyError) as e:
            store.rows_of(unknown)
        assert repr([u for u in unknown if u not in {"a", "b", "c", "9", "10"}][0]) in str(e.value)
        assert "src.tsv" in str(e.value)


def test_contains_and_len(tmp_path):
    store = _store(tmp_path)
    assert len(store) == 5
    for docid in ("a", "b", "c", "9", "10"):
        assert docid in store
    for docid in ("", "d", "1", "100", "aa", "A", "zzzzzzzzzzzz", " a"):
        assert docid not in store


def test_texts_join_title(tmp_path):
    store = _store(tmp_path)
    assert store.texts([0, 1, 2]) == ["Gamma third letter", "first letter", "Beta second letter"]
    assert store.texts(np.array([2]), title_sep=". ") == ["Beta. second letter"]
    assert store.text("c") == "Gamma third letter"
    assert store.text("10") == "ten"
    assert store.source == "src.tsv"
    # the fingerprint hashes the content (20 hex chars); the build fingerprint only names the cache file
    assert len(store.fingerprint) == 20 and int(store.fingerprint, 16) >= 0 and store.fingerprint != "fp"
    assert _store(tmp_path / "other", fp="fp2").fingerprint == store.fingerprint
    assert _store(tmp_path / "edited", RECORDS[:-1]).fingerprint != store.fingerprint


def test_small_batches(tmp_path):
    store = _store(tmp_path, batch_rows=2)
    assert store.table.num_rows == 5
    assert store.text("9") == "nine"
    assert store.ids.tolist() == ["c", "a", "b", "10", "9"]


def test_texts_across_record_batches(tmp_path):
    # 5 rows in batches of 2: rows from every batch, out of order and repeated, come back in request order
    store = _store(tmp_path, batch_rows=2)
    assert len(store.table.to_batches()) == 3
    whole = [f"{t} {x}" if t else x for _, _, t, x in RECORDS]
    for rows in ([4, 0, 3, 1, 2], [2, 2, 0], [4], [], np.array([3, 1, 4, 0], dtype=np.int32)):
        assert store.texts(rows) == [whole[r] for r in rows]
    assert store.texts([1, 4], title_sep=": ") == ["first letter", "nine"]
    assert store.texts([0], title_sep=": ") == ["Gamma: third letter"]


def test_duplicate_strict(tmp_path):
    records = [(1, "a", "", "x"), (2, "b", "", "y"), (5, "a", "", "z")]
    with pytest.raises(DataFormatError) as e:
        _store(tmp_path, records)
    assert str(e.value) == "src.tsv:5: duplicate id 'a' (first on line 1)"


def test_duplicate_strict_reports_the_earliest_bad_line(tmp_path):
    # "b" repeats on line 2 and "a" on line 4: strict mode stops at line 2, the first bad record
    records = [(1, "b", "", "x"), (2, "b", "", "y"), (3, "a", "", "z"), (4, "a", "", "w")]
    with pytest.raises(DataFormatError) as e:
        _store(tmp_path, records)
    assert str(e.value) == "src.tsv:2: duplicate id 'b' (first on line 1)"


def test_duplicate_lenient_active_rows(tmp_path, caplog):
    records = [(1, "a", "", "first a"), (2, "b", "", "b"), (3, "a", "", "second a"), (4, "c", "", "c"),
               (7, "a", "", "third a")]
    policy = ReadPolicy(strict=False)
    with caplog.at_level(logging.WARNING, logger="dr"):
        store = _store(tmp_path, records, policy=policy)
    assert store.active_rows.tolist() == [0, 1, 3]
    assert len(store) == 3
    assert store.rows_of(["a"]).tolist() == [0]
    assert store.text("a") == "first a"
    assert store.table.num_rows == 5  # the table keeps them; active_rows skips them
    # one summary key per kind of problem (ids elided); each skip is still logged with its id and line
    assert dict(policy.skipped) == {"src.tsv: duplicate id ... (first on line 1)": 2}
    assert [r.getMessage() for r in caplog.records] == [
        "skipping src.tsv:3: duplicate id 'a' (first on line 1)",
        "skipping src.tsv:7: duplicate id 'a' (first on line 1)",
    ]


def test_cache_hit_does_not_read_records(tmp_path):
    first = _store(tmp_path)
    cached = tmp_path / "c" / "corpus" / "fp.arrow"
    assert cached.is_file()
    again = CorpusStore.build(_never(), "src.tsv", "fp", ReadPolicy(), cache_dir=tmp_path / "c")
    assert again.ids.tolist() == first.ids.tolist()
    assert again.text("b") == "Beta second letter"
    assert again.fingerprint == first.fingerprint  # the content hash, read back from the sidecar
    # another fingerprint is another cache entry
    with pytest.raises(AssertionError, match="cache should have been used"):
        CorpusStore.build(_never(), "src.tsv", "fp2", ReadPolicy(), cache_dir=tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c" / "corpus").iterdir()) == [
        "fp.arrow", "fp.content", "fp.ids.npy", "fp.order.npy", "fp.skipped.json"
    ]
    assert (tmp_path / "c" / "corpus" / "fp.content").read_text().strip() == first.fingerprint
    # a cache written without the content sidecar falls back to the build fingerprint
    (tmp_path / "c" / "corpus" / "fp.content").unlink()
    old = CorpusStore.build(_never(), "src.tsv", "fp", ReadPolicy(), cache_dir=tmp_path / "c")
    assert old.fingerprint == "fp" and old.text("b") == "Beta second letter"


def test_default_cache_dir_is_dr_cache(tmp_path):
    # the autouse fixture points DR_CACHE at tmp_path / "dr-cache"
    assert Path(os.environ["DR_CACHE"]) == tmp_path / "dr-cache"
    CorpusStore.build(iter(RECORDS), "src.tsv", "envfp", ReadPolicy())
    assert (tmp_path / "dr-cache" / "corpus" / "envfp.arrow").is_file()
    store = CorpusStore.build(_never(), "src.tsv", "envfp", ReadPolicy())
    assert len(store) == 5


def test_cache_reports_lenient_skips_again(tmp_path, caplog):
    coll = tmp_path / "collection.tsv"
    coll.write_bytes(b"1\tone\n2\n3\t\n1\tagain\n4\t\xff\n5\tfive\n")
    p1 = ReadPolicy(strict=False)
    p1.skipped["earlier.tsv: unrelated"] = 7  # skips from before the build are not the corpus's
    fp = source_fingerprint([coll], "tsv")
    s1 = CorpusStore.build(read_collection(coll, p1), coll, fp, p1, cache_dir=tmp_path / "c")
    expected = {  # keyed by the message up to its first ':', quoted ids elided
        "collection.tsv: malformed line": 1,
        "collection.tsv: empty text for id ...": 1,
        "collection.tsv: not UTF-8": 1,
        "collection.tsv: duplicate id ... (first on line 1)": 1,
    }
    assert dict(p1.skipped) == expected | {"earlier.tsv: unrelated": 7}
    assert len(s1) == 2 and s1.active_rows.tolist() == [0, 2]

    sidecar = tmp_path / "c" / "corpus" / f"{fp}.skipped.json"
    assert json.loads(sidecar.read_text()) == {k: v for k, v in expected.items() if "duplicate" not in k}

    p2 = ReadPolicy(strict=False)
    s2 = CorpusStore.build(_never(), coll, fp, p2, cache_dir=tmp_path / "c")
    assert dict(p2.skipped) == expected  # reader skips from the sidecar + the duplicate found again, once
    assert s2.text("1") == "one" and s2.text("5") == "five" and len(s2) == 2
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dr"):
        p2.report()
    assert sorted(r.getMessage() for r in caplog.records) == sorted(
        f"lenient read skipped 1 record(s): {k}" for k in expected
    )


def test_strict_failure_leaves_no_cache(tmp_path):
    coll = tmp_path / "collection.tsv"
    coll.write_text("1\tone\n2\ttwo\nbroken\n")
    policy = ReadPolicy()
    with pytest.raises(DataFormatError, match=r"collection.tsv:3: "):
        CorpusStore.build(read_collection(coll, policy), coll, "strictfp", policy, cache_dir=tmp_path / "c")
    assert list((tmp_path / "c" / "corpus").iterdir()) == []


def test_empty_corpus_is_an_error_and_not_cached(tmp_path):
    for _ in range(2):  # the second try must not load an empty table from the cache
        with pytest.raises(ValueError, match="src.tsv: no passages"):
            CorpusStore.build(iter([]), "src.tsv", "emptyfp", ReadPolicy(), cache_dir=tmp_path / "c")
    assert list((tmp_path / "c" / "corpus").iterdir()) == []


def test_gzip_source(tmp_path):
    import gzip

    coll = tmp_path / "collection.tsv.gz"
    with gzip.open(coll, "wb") as f:
        f.write(b"7\tTitle seven\tseven text\n8\t\teight text\n")
    policy = ReadPolicy()
    store = CorpusStore.build(read_collection(coll, policy), coll, source_fingerprint([coll], "gz"), policy)
    assert store.texts(store.rows_of(["8", "7"])) == ["eight text", "Title seven seven text"]


def test_source_fingerprint(tmp_path):
    f = tmp_path / "collection.tsv"
    f.write_text("1\tone\n")
    a = source_fingerprint([f], "tsv")
    assert a == source_fingerprint([f], "tsv")
    assert len(a) == 20
    assert a != source_fingerprint([f], "beir")
    g = tmp_path / "other.tsv"
    g.write_text("1\tone\n")
    assert a != source_fingerprint([g], "tsv")
    assert source_fingerprint([f, g], "tsv") != source_fingerprint([g, f], "tsv")
    f.write_text("1\tone, now longer\n")
    assert a != source_fingerprint([f], "tsv")


def test_changed_source_is_read_again(tmp_path):
    coll = tmp_path / "collection.tsv"
    coll.write_text("1\tone\n")
    p = ReadPolicy()
    s1 = CorpusStore.build(read_collection(coll, p), coll, source_fingerprint([coll], "tsv"), p)
    assert s1.text("1") == "one"
    coll.write_text("1\tuno\n2\tdos\n")
    s2 = CorpusStore.build(read_collection(coll, p), coll, source_fingerprint([coll], "tsv"), p)
    assert s2.text("1") == "uno" and len(s2) == 2


def test_fingerprint_follows_content_not_path(tmp_path):
    """The embedding cache is keyed by this: a copy elsewhere reuses embeddings, an edit does not."""
    from dr.data.msmarco import read_collection
    from dr.data.corpus import source_fingerprint

    def load(path):
        policy = ReadPolicy()
        return CorpusStore.build(read_collection(path, policy), path, source_fingerprint([path], "t"), policy,
                                 tmp_path / "cache")

    a, b, c = tmp_path / "a.tsv", tmp_path / "sub" / "b.tsv", tmp_path / "c.tsv"
    b.parent.mkdir()
    a.write_text("1\tfirst passage\n2\tsecond passage\n")
    b.write_text(a.read_text())
    c.write_text("1\tfirst passage\n2\tsecond passage!\n")
    assert load(a).fingerprint == load(b).fingerprint
    assert load(a).fingerprint != load(c).fingerprint


def test_id_index_is_cached_beside_the_arrow_file(tmp_path, monkeypatch):
    import dr.data.corpus as corpus_module

    first = _store(tmp_path)
    assert (tmp_path / "c" / "corpus" / "fp.order.npy").is_file()
    monkeypatch.setattr(corpus_module, "id_index", lambda table: pytest.fail("sorted the ids again"))
    again = CorpusStore.build(_never(), "src.tsv", "fp", ReadPolicy(), cache_dir=tmp_path / "c")
    assert again.rows_of(["b", "c", "9", "a", "10"]).tolist() == [2, 0, 4, 1, 3]
    assert again.ids.tolist() == first.ids.tolist() and "10" in again and "1" not in again
    monkeypatch.undo()
    # an index that does not fit the table (a copy from elsewhere, a crash) is computed again
    np.save(tmp_path / "c" / "corpus" / "fp.order.npy", np.arange(2))
    assert CorpusStore.build(_never(), "src.tsv", "fp", ReadPolicy(), cache_dir=tmp_path / "c").rows_of(["9"]).tolist() == [4]


def test_duplicates_are_found_again_with_a_cached_index(tmp_path):
    records = [(1, "a", "", "x"), (2, "b", "", "y"), (5, "a", "", "z")]
    _store(tmp_path, records, policy=ReadPolicy(strict=False))
    with pytest.raises(DataFormatError, match="src.tsv:5: duplicate id 'a'"):
        CorpusStore.build(_never(), "src.tsv", "fp", ReadPolicy(), cache_dir=tmp_path / "c")


def test_sets_over_one_collection_share_one_store(tmp_path, caplog):
    from dr.data.sources import msmarco_set

    coll = tmp_path / "collection.tsv"
    coll.write_text("1\tone\n2\ttwo\n3\tthree\nbroken\n")
    (tmp_path / "q1.tsv").write_text("10\tfirst\n")
    (tmp_path / "q2.tsv").write_text("20\tsecond\n")
    (tmp_path / "r1.tsv").write_text("10 0 1 1\n")
    (tmp_path / "r2.tsv").write_text("20 0 2 1\n")
    with caplog.at_level(logging.WARNING, logger="dr"):
        a = msmarco_set("a", str(coll), str(tmp_path / "q1.tsv"), str(tmp_path / "r1.tsv"), strict=False)
        b = msmarco_set("b", str(coll), str(tmp_path / "q2.tsv"), str(tmp_path / "r2.tsv"), strict=False)
    assert a.corpus is b.corpus and b.positives("20") == ["2"]
    # each set still reports the collection's skipped line
    assert caplog.text.count("lenient read skipped 1 record(s): collection.tsv: malformed line") == 2
    other = tmp_path / "other.tsv"
    other.write_text(coll.read_text())
    c = msmarco_set("c", str(other), str(tmp_path / "q1.tsv"), str(tmp_path / "r1.tsv"), strict=False)
    assert c.corpus is not a.corpus
    pinned = msmarco_set("d", str(tmp_path / "other.tsv"), str(tmp_path / "q1.tsv"), str(tmp_path / "r1.tsv"),
                         strict=False, layout="pid_text")
    assert pinned.corpus is not c.corpus  # another reader setting is another store
