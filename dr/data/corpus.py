"""A memory-mapped passage table with an id-to-row index.

Passages live in an Arrow IPC file that is memory-mapped, so the 8.8M-passage MS MARCO collection costs
page cache, not Python strings. Ids are looked up through a sorted numpy array (`searchsorted`), not a
dict of strings. The Arrow file is cached by source path, size and mtime, and the id index (the ids and
their sort order) beside it, so a second load neither reads the source nor sorts; within a process, the
builders of one collection share one store (`shared_store`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from dr.data.errors import ReadPolicy
from dr.io import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

_FORMAT_VERSION = "1"
_SCHEMA = pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string()), ("line", pa.int64())])


def default_cache_dir() -> Path:
    return Path(os.environ.get("DR_CACHE", Path.home() / ".cache" / "dr"))


def source_fingerprint(paths: Sequence[str | Path], kind: str) -> str:
    """Hash of the sources' absolute paths, sizes and mtimes plus the reader kind and format version."""
    h = hashlib.sha1(f"{kind}:{_FORMAT_VERSION}".encode())
    for p in paths:
        st = Path(p).stat()
        h.update(f"|{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


class CorpusStore:
    """Passages `(id, title, text)` in a memory-mapped Arrow table. `fingerprint` hashes the content.

    `rows` are positions in the table; `active_rows` skips later duplicates kept by a lenient read.
    """

    def __init__(self, table: pa.Table, source: str, fingerprint: str, policy: ReadPolicy | None = None,
                 index: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """`index`: `(ids, order)` as `id_index(table)` computes them (read back from the cache)."""
        self.table = table
        self._record_batches: list[pa.RecordBatch] | None = None
        self._starts: np.ndarray | None = None
        self.source = source
        self.fingerprint = fingerprint
        self.skipped: Counter = Counter()  # lenient skips of the build, for `shared_store`'s later callers
        ids, order = index if index is not None else id_index(table)
        sorted_ids = ids[order]
        dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1]) + 1  # positions of later duplicates
        if len(dup):
            lines = table.column("line").to_numpy()
            policy = policy or ReadPolicy()
            keep = np.ones(len(ids), dtype=bool)
            keep[dup] = False
            # Each run of equal ids starts at its earliest row (stable sort); report in file order.
            run_start = np.maximum.accumulate(np.where(keep, np.arange(len(ids)), 0))
            for pos in dup[np.argsort(order[dup], kind="stable")]:
                first, again = order[run_start[pos]], order[pos]
                policy.bad(source, int(lines[again]),
                           f"duplicate id {str(sorted_ids[pos])!r} (first on line {int(lines[first])})")
            order, sorted_ids = order[keep], sorted_ids[keep]
        self._sorted_ids = sorted_ids
        self._order = order
        self.active_rows = np.sort(order)
        self.ids = ids

    def __len__(self) -> int:
        return len(self.active_rows)

    def __contains__(self, docid: str) -> bool:
        pos = np.searchsorted(self._sorted_ids, docid)
        return bool(pos < len(self._sorted_ids) and self._sorted_ids[pos] == docid)

    def contains(self, docids: Sequence[str]) -> np.ndarray:
        """(N,) bool: whether each of `docids` is in the corpus (one vectorized search)."""
        keys = np.asarray(docids, dtype=str)
        if not len(keys) or not len(self._sorted_ids):
            return np.zeros(len(keys), dtype=bool)
        pos = np.minimum(np.searchsorted(self._sorted_ids, keys), len(self._sorted_ids) - 1)
        return self._sorted_ids[pos] == keys

    def rows_of(self, docids: Sequence[str]) -> np.ndarray:
        """Table rows of `docids` (int64, same order); KeyError naming the first unknown id."""
        keys = np.asarray(docids, dtype=str)
        pos = np.searchsorted(self._sorted_ids, keys)
        pos_clipped = np.minimum(pos, len(self._sorted_ids) - 1)
        found = self._sorted_ids[pos_clipped] == keys
        if not found.all():
            raise KeyError(f"{self.source}: id {keys[~found][0]!r} is not in the corpus")
        return self._order[pos_clipped].astype(np.int64)

    def texts(self, rows: Sequence[int] | np.ndarray, title_sep: str = " ") -> list[str]:
        """Passage strings for `rows`: title and text joined with `title_sep` (BEIR convention).

        Taken record batch by record batch: `Table.take` on a multi-chunk table concatenates each whole
        column first (at 1M passages a 400 MB copy, and every page of the mapped file read, per call)."""
        rows = np.asarray(rows, dtype=np.int64)
        titles: list = [None] * len(rows)
        texts: list = [None] * len(rows)
        chunk = np.searchsorted(self._chunk_starts, rows, side="right") - 1
        order = np.argsort(chunk, kind="stable")
        bounds = np.searchsorted(chunk[order], np.arange(len(self._chunk_starts) + 1))
        for c in np.flatnonzero(np.diff(bounds)):
            where = order[bounds[c] : bounds[c + 1]]
            sub = self._batches[c].take(pa.array(rows[where] - self._chunk_starts[c]))
            for name, out in (("title", titles), ("text", texts)):
                for i, value in zip(where.tolist(), sub.column(name).to_pylist()):
                    out[i] = value
        return [f"{t}{title_sep}{x}" if t else x for t, x in zip(titles, texts)]

    @property
    def _batches(self) -> list[pa.RecordBatch]:
        if self._record_batches is None:
            self._record_batches = self.table.to_batches()
        return self._record_batches

    @property
    def _chunk_starts(self) -> np.ndarray:
        if self._starts is None:
            self._starts = np.cumsum([0] + [len(b) for b in self._batches[:-1]], dtype=np.int64)
        return self._starts

    def text(self, docid: str) -> str:
        return self.texts(self.rows_of([docid]))[0]

    @classmethod
    def build(
        cls,
        records: Iterable[tuple[int, str, str, str]],
        source: str | Path,
        fingerprint: str,
        policy: ReadPolicy,
        cache_dir: str | Path | None = None,
        batch_rows: int = 50_000,
    ) -> CorpusStore:
        """Write `(line, id, title, text)` records to a cached Arrow file (atomically) and map it.

        The cache is keyed by `fingerprint`; a hit skips reading the source entirely.
        """
        cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        path = cache_dir / "corpus" / f"{fingerprint}.arrow"
        if not path.exists():
            before = dict(policy.skipped)
            with atomic_path(path) as tmp:
                n, content = _write_arrow(records, tmp, batch_rows)
                if n == 0:  # before the rename, so that an empty table is never cached
                    raise ValueError(f"{source}: no passages")
            logger.info("corpus %s: %d passages cached at %s", source, n, path)
            # The content hash (not the path) names the corpus for the embedding cache, so a fresh clone
            # or a moved copy of the same file reuses embeddings an unchanged model already computed.
            atomic_write_text(path.with_suffix(".content"), content)
            # Lenient skips are kept beside the cache so that a cached load reports them again.
            atomic_write_text(path.with_suffix(".skipped.json"), json.dumps({k: v - before.get(k, 0) for k, v in policy.skipped.items() if v > before.get(k, 0)}))
        else:
            skipped_file = path.with_suffix(".skipped.json")
            if skipped_file.exists():
                policy.skipped.update(json.loads(skipped_file.read_text()))
        table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        content_file = path.with_suffix(".content")
        content = content_file.read_text().strip() if content_file.exists() else fingerprint
        return cls(table, str(source), content, policy, cached_id_index(path, table))


def id_index(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """`(ids, order)`: the id column as a fixed-width numpy array, and the stable argsort that sorts it."""
    ids = np.asarray(table.column("id").to_numpy(zero_copy_only=False), dtype=str)  # (N,) fixed width
    return ids, np.argsort(ids, kind="stable")


def cached_id_index(arrow_path: Path, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """`id_index(table)`, kept beside the Arrow file (`.ids.npy`, `.order.npy`) and memory-mapped on later
    loads: a string sort of MS MARCO's 8.8M ids takes seconds at every load, the mapping none."""
    files = arrow_path.with_suffix(".ids.npy"), arrow_path.with_suffix(".order.npy")
    if all(f.exists() for f in files):
        ids, order = (np.load(f, mmap_mode="r", allow_pickle=False) for f in files)
        if len(ids) == len(order) == table.num_rows:
            return ids, order
    ids, order = id_index(table)
    for f, array in zip(files, (ids, order)):  # the order last: its presence means both are complete
        with atomic_path(f) as tmp:
            np.save(tmp, array, allow_pickle=False)
    return ids, order


_SHARED: weakref.WeakValueDictionary[tuple[str, str], CorpusStore] = weakref.WeakValueDictionary()


def shared_store(records: Iterable[tuple[int, str, str, str]], source: str | Path, fingerprint: str,
                 policy: ReadPolicy, cache_dir: str | Path | None = None) -> CorpusStore:
    """`CorpusStore.build`, but one instance per collection in a process: `data=msmarco`'s train, dev and
    DL19 sets read one collection, and now share its table and id index instead of loading it three times.

    Keyed by the cache directory and the build fingerprint (source, size, mtime, reader settings); held
    weakly, so a store nobody uses any more is freed. Lenient skips of the build are counted again into
    each later caller's `policy`, as a load from the disk cache would.
    """
    key = (str(Path(cache_dir) if cache_dir else default_cache_dir()), fingerprint)
    store = _SHARED.get(key)
    if store is None:
        before = Counter(policy.skipped)
        store = CorpusStore.build(records, source, fingerprint, policy, cache_dir)
        store.skipped = Counter(policy.skipped) - before
        _SHARED[key] = store
    else:
        logger.info("corpus %s: reusing the store already open in this process", source)
        policy.skipped.update(store.skipped)
    return store


def _write_arrow(records: Iterable[tuple[int, str, str, str]], path: Path, batch_rows: int) -> tuple[int, str]:
    """Write the records; returns their count and a hash of their ids and texts."""
    n = 0
    digest = hashlib.sha1()
    cols: tuple[list, list, list, list] = ([], [], [], [])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, _SCHEMA) as writer:

        def flush() -> None:
            if cols[0]:
                writer.write_batch(pa.record_batch([cols[1], cols[2], cols[3], cols[0]], schema=_SCHEMA))
                for c in cols:
                    c.clear()

        for line, docid, title, text in records:
            cols[0].append(line)
            cols[1].append(docid)
            cols[2].append(title)
            cols[3].append(text)
            digest.update(f"{docid}\x1f{title}\x1f{text}\x1e".encode())
            n += 1
            if len(cols[0]) >= batch_rows:
                flush()
        flush()
    return n, digest.hexdigest()[:20]
