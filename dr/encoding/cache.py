"""Corpus embeddings cached on disk, keyed by (encoder, corpus), so an unchanged model never encodes the
same corpus twice.

An entry is a directory `<key>/` of parts, one per process that encoded it: `part-I-of-N.rows.npy`
(int64 corpus rows) and `part-I-of-N.emb.npy` ((n, H) float32, or float16 with `dtype: float16`), each
written atomically, and `manifest.json` (encoder identity, corpus fingerprint, rows, dim, dtype, parts)
written last by the first process once every part is on disk: an entry without a manifest is incomplete
and unused. Readers memory-map the parts (`allow_pickle=False`) and read them block by block
(`ShardEmbeddings.blocks`), so no process loads a whole corpus at once. A manifest that does not match what
the key stands for is rejected (a warning, then the corpus is encoded again).
"""
from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from dr.io import atomic_write_json

logger = logging.getLogger(__name__)

FORMAT = 2
MANIFEST = "manifest.json"
Block = tuple[np.ndarray, np.ndarray]  # (rows (n,) int64, embeddings (n, H) float32)

# Entries this process wrote, and entries it read that an earlier process wrote (`reused_from_earlier_runs`,
# for the reports' wall times).
_WRITTEN_HERE: set[str] = set()
_REUSED: set[str] = set()


def reused_from_earlier_runs() -> int:
    """How many distinct corpus encodings this process took from disk that an earlier process wrote."""
    return len(_REUSED)


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Hash of every parameter and buffer (names, shapes, bytes): changes whenever the model does."""
    h = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:20]


def cache_key(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class EntryMeta:
    """What an entry must hold: the encoder's identity, the corpus fingerprint and size, the dimension."""

    model: str
    corpus: str
    rows: int
    dim: int

    @property
    def key(self) -> str:
        return cache_key(self.model, self.corpus, str(self.rows), str(self.dim))


@dataclass
class Segment:
    """Rows [start, stop) of one part: `rows` (n,) and `emb` (n, H), in memory or memory-mapped."""

    rows: np.ndarray
    emb: np.ndarray


class ShardEmbeddings:
    """The corpus embeddings one process holds: segments of (rows, embeddings), read block by block."""

    def __init__(self, segments: list[Segment], dim: int) -> None:
        self.segments = segments
        self.dim = dim

    def __len__(self) -> int:
        return sum(len(s.rows) for s in self.segments)

    def rows(self) -> np.ndarray:
        return np.concatenate([np.asarray(s.rows, np.int64) for s in self.segments]) if self.segments else (
            np.empty(0, np.int64))

    def blocks(self, block_rows: int = 65_536) -> Iterator[Block]:
        """(rows, float32 embeddings) of at most `block_rows` rows at a time; pages of memory-mapped parts
        are released after each block, so reading a shard never keeps it resident."""
        for seg in self.segments:
            for start in range(0, len(seg.rows), block_rows):
                stop = min(start + block_rows, len(seg.rows))
                yield np.array(seg.rows[start:stop], np.int64), np.array(seg.emb[start:stop], np.float32)
                _release(seg.emb, start, stop)
                _release(seg.rows, start, stop)

    def matrix(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), H) float32 embeddings in the order of `rows` (every one must be in this shard)."""
        rows = np.asarray(rows, np.int64)
        where = np.full(int(rows.max(initial=-1)) + 1, -1, np.int64)
        where[rows] = np.arange(len(rows))
        out = np.empty((len(rows), self.dim), np.float32)
        seen = 0
        for block_rows, emb in self.blocks():
            inside = block_rows < len(where)
            pos = where[block_rows[inside]]
            keep = pos >= 0
            out[pos[keep]] = emb[inside][keep]
            seen += int(keep.sum())
        if seen != len(rows):
            raise KeyError(f"{len(rows) - seen} of {len(rows)} requested rows are not in this shard")
        return out


def _release(array: np.ndarray, start: int, stop: int) -> None:
    """Drop the resident pages of rows [start, stop) of a memory-mapped array (no-op in memory): the pages
    stay in the page cache, but no longer count in this process's RSS."""
    mm = getattr(array, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or stop <= start:
        return
    base = np.frombuffer(mm, np.uint8).ctypes.data  # address of the mapping
    lo = array.ctypes.data - base + start * array.strides[0]
    hi = lo + (stop - start) * array.strides[0]
    lo, hi = lo // mmap.PAGESIZE * mmap.PAGESIZE, hi // mmap.PAGESIZE * mmap.PAGESIZE  # whole pages, none ahead
    if hi > lo:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


class EmbeddingCache:
    """Entries on disk (see the module docstring) plus the last `memory_entries` shards in memory. With
    `persist=False` nothing new is written to disk: a model in training changes at every evaluation, so its
    embeddings are only worth keeping in memory (dev and test sets that share a corpus encode it once)."""

    def __init__(self, directory: str | Path, persist: bool = True, memory_entries: int = 1,
                 dtype: str = "float32") -> None:
        if dtype not in ("float32", "float16"):
            raise ValueError(f"embedding cache dtype must be float32 or float16, got {dtype!r}")
        self.directory = Path(directory)
        self.persist = persist
        self.memory_entries = memory_entries
        self.dtype = dtype
        self._memory: dict[tuple, ShardEmbeddings] = {}

    def entry(self, meta: EntryMeta) -> Path:
        return self.directory / meta.key

    # ------------------------------------------------------------------ memory
    def remembered(self, meta: EntryMeta, rank: int, world: int) -> ShardEmbeddings | None:
        return self._memory.get((meta.key, rank, world))

    def remember(self, meta: EntryMeta, rank: int, world: int, shard: ShardEmbeddings) -> None:
        if not self.memory_entries:
            return
        self._memory[(meta.key, rank, world)] = shard
        while len(self._memory) > self.memory_entries:
            self._memory.pop(next(iter(self._memory)))

    # ------------------------------------------------------------------ disk
    def manifest(self, meta: EntryMeta) -> dict | None:
        """The entry's manifest if it is complete and matches `meta`; None (with a warning on a mismatch)."""
        path = self.entry(meta) / MANIFEST
        if not path.exists():
            return None
        try:
            man = json.loads(path.read_text())
            expected = {"format": FORMAT, **asdict(meta)}
            wrong = {k: (man.get(k), v) for k, v in expected.items() if man.get(k) != v}
            if man.get("dtype") not in ("float32", "float16"):
                wrong["dtype"] = (man.get("dtype"), "float32 or float16")
            if sum(p["rows"] for p in man.get("parts", [])) != meta.rows:
                wrong["parts"] = ("rows summing to " + str(sum(p["rows"] for p in man.get("parts", []))), meta.rows)
        except (ValueError, KeyError, TypeError) as e:
            logger.warning("embedding cache %s: unreadable manifest (%s); encoding again", path, e)
            return None
        if wrong:
            logger.warning("embedding cache %s rejected: manifest does not match (%s); encoding again", path,
                           ", ".join(f"{k}: found {f!r}, expected {x!r}" for k, (f, x) in wrong.items()))
            return None
        return man

    def open(self, meta: EntryMeta, start: int = 0, stop: int | None = None) -> ShardEmbeddings | None:
        """Rows [start, stop) of the entry (in manifest order of its parts), memory-mapped; None on a miss."""
        man = self.manifest(meta)
        if man is None:
            return None
        stop = meta.rows if stop is None else stop
        segments, offset = [], 0
        for part in man["parts"]:
            lo, hi = max(start, offset), min(stop, offset + part["rows"])
            if lo < hi:
                base = self.entry(meta) / part["name"]
                rows = np.load(f"{base}.rows.npy", mmap_mode="r", allow_pickle=False)
                emb = np.load(f"{base}.emb.npy", mmap_mode="r", allow_pickle=False)
                if len(rows) != part["rows"] or emb.shape != (part["rows"], meta.dim):
                    logger.warning("embedding cache %s: part %s has shape %s, manifest says (%d, %d); encoding "
                                   "again", self.entry(meta), part["name"], emb.shape, part["rows"], meta.dim)
                    return None
                segments.append(Segment(rows[lo - offset : hi - offset], emb[lo - offset : hi - offset]))
            offset += part["rows"]
        key = str(self.entry(meta))
        if key not in _WRITTEN_HERE:
            _REUSED.add(key)
        logger.info("corpus embeddings from cache %s (rows %d-%d of %d)", self.entry(meta), start, stop, meta.rows)
        return ShardEmbeddings(segments, meta.dim)

    def create_part(self, meta: EntryMeta, part: int, parts: int, n: int) -> PartWriter:
        """A part of `n` rows to fill in place (memory-mapped files on disk, so a process encoding a large
        shard never holds it in RAM); `commit()` renames it into the entry."""
        return PartWriter(self.entry(meta), _part_name(part, parts), n, meta.dim, self.dtype)

    def write_manifest(self, meta: EntryMeta, part_rows: list[int]) -> None:
        """Mark the entry complete: called once, after every part is written."""
        directory = self.entry(meta)
        man = {"format": FORMAT, **asdict(meta), "dtype": self.dtype,
               "parts": [{"name": _part_name(i, len(part_rows)), "rows": n} for i, n in enumerate(part_rows)]}
        atomic_write_json(directory / MANIFEST, man)
        _WRITTEN_HERE.add(str(directory))
        for stale in directory.glob("part-*.npy"):  # parts of an earlier, incomplete or rejected write
            if not any(stale.name.startswith(p["name"] + ".") for p in man["parts"]):
                stale.unlink(missing_ok=True)

    def invalidate(self, meta: EntryMeta) -> None:
        """Remove a rejected entry's manifest before it is written again."""
        (self.entry(meta) / MANIFEST).unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self._memory.clear()


class PartWriter:
    """`rows` (n,) int64 and `emb` (n, H) memory-mapped temporary files; `commit()` flushes and renames
    them (atomic), then `segment()` maps the committed files read-only."""

    def __init__(self, directory: Path, name: str, n: int, dim: int, dtype: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.name = directory, name
        self._tmp = {s: directory / f".{name}.{s}.{os.getpid()}.tmp.npy" for s in ("rows", "emb")}
        self.rows = np.lib.format.open_memmap(self._tmp["rows"], mode="w+", dtype=np.int64, shape=(n,))
        self.emb = np.lib.format.open_memmap(self._tmp["emb"], mode="w+", dtype=dtype, shape=(n, dim))

    def commit(self) -> None:
        for suffix in ("rows", "emb"):
            array = getattr(self, suffix)
            array.flush()
            setattr(self, suffix, None)
            del array
            os.replace(self._tmp[suffix], self.directory / f"{self.name}.{suffix}.npy")

    def segment(self) -> Segment:
        load = lambda s: np.load(self.directory / f"{self.name}.{s}.npy", mmap_mode="r", allow_pickle=False)  # noqa: E731
        return Segment(load("rows"), load("emb"))

    def abort(self) -> None:
        self.rows = self.emb = None
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)


def _part_name(part: int, parts: int) -> str:
    return f"part-{part:05d}-of-{parts:05d}"
