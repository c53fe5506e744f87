"""The memory-mapped, per-part embedding cache: round trip, slices for another process count, rejection
of a manifest that does not match, incomplete entries unused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dr.encoding.cache import MANIFEST, EmbeddingCache, EntryMeta, ShardEmbeddings, Segment


def _write(cache: EmbeddingCache, meta: EntryMeta, parts: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for i, (rows, emb) in enumerate(parts):
        w = cache.create_part(meta, i, len(parts), len(rows))
        w.rows[:], w.emb[:] = rows, emb
        w.commit()
    cache.write_manifest(meta, [len(r) for r, _ in parts])


@pytest.fixture
def entry(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((10, 4)).astype(np.float32)
    rows = np.array([7, 2, 9, 0, 1, 3, 8, 4, 6, 5])  # parts hold rows in plan order, not sorted
    meta = EntryMeta("model-a", "corpus-x", 10, 4)
    cache = EmbeddingCache(tmp_path / "emb")
    _write(cache, meta, [(rows[:6], emb[:6]), (rows[6:], emb[6:])])
    return cache, meta, rows, emb


def test_round_trip_in_blocks_and_as_a_matrix(entry):
    cache, meta, rows, emb = entry
    shard = cache.open(meta)
    assert len(shard) == 10 and shard.rows().tolist() == rows.tolist()
    got = list(shard.blocks(block_rows=4))
    assert [len(r) for r, _ in got] == [4, 2, 4]  # blocks never cross a part
    np.testing.assert_array_equal(np.concatenate([e for _, e in got]), emb)
    assert all(e.dtype == np.float32 for _, e in got)
    order = np.arange(10)
    np.testing.assert_array_equal(shard.matrix(order), emb[np.argsort(rows)])
    with pytest.raises(KeyError):
        ShardEmbeddings([Segment(rows[:3], emb[:3])], 4).matrix(np.array([7, 5]))


def test_another_process_count_reads_contiguous_slices(entry):
    cache, meta, rows, emb = entry
    for world in (1, 2, 3):
        parts = [cache.open(meta, 10 * r // world, 10 * (r + 1) // world) for r in range(world)]
        np.testing.assert_array_equal(np.concatenate([p.rows() for p in parts]), rows)
        np.testing.assert_array_equal(np.concatenate([e for p in parts for _, e in p.blocks()]), emb)


def test_manifest_mismatch_is_rejected(entry, caplog):
    cache, meta, _, _ = entry
    for other in (EntryMeta("model-b", "corpus-x", 10, 4), EntryMeta("model-a", "corpus-x", 10, 8)):
        # same directory, different expectations: as if the key collided or the files were swapped
        (cache.directory / other.key).mkdir(parents=True, exist_ok=True)
        for f in cache.entry(meta).iterdir():
            (cache.directory / other.key / f.name).write_bytes(f.read_bytes())
        assert cache.open(other) is None
    assert "rejected" in caplog.text
    man = json.loads((cache.entry(meta) / MANIFEST).read_text())
    man["parts"][0]["rows"] = 5  # parts no longer add up
    (cache.entry(meta) / MANIFEST).write_text(json.dumps(man))
    assert cache.open(meta) is None


def test_incomplete_entry_is_a_miss(tmp_path):
    cache, meta = EmbeddingCache(tmp_path / "emb"), EntryMeta("m", "c", 3, 2)
    w = cache.create_part(meta, 0, 2, 3)
    w.rows[:], w.emb[:] = [0, 1, 2], 1.0
    w.commit()
    assert cache.open(meta) is None  # no manifest: the other part may still be missing


def test_float16_storage_reads_back_as_float32(tmp_path):
    cache, meta = EmbeddingCache(tmp_path / "emb", dtype="float16"), EntryMeta("m", "c", 3, 2)
    emb = np.array([[0.5, 1.0], [2.0, -1.0], [0.25, 3.0]], np.float32)
    _write(cache, meta, [(np.arange(3), emb)])
    assert np.load(cache.entry(meta) / "part-00000-of-00001.emb.npy").dtype == np.float16
    (rows, got), = cache.open(meta).blocks()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, emb)
    with pytest.raises(ValueError, match="float32 or float16"):
        EmbeddingCache(tmp_path, dtype="int8")
