"""Prepared data under the dr cache: built once, by one process, shared by every process and later run.

A prepared entry is a directory named by a content key. Whoever needs it first takes a file lock, builds it
into a temporary directory beside the final one and renames it into place; processes that asked meanwhile
block on the lock and then find the directory. A lock (not rank 0 by convention) decides who builds, so a
process that alone needs the entry (rank 0 evaluating, a single-process run) never waits for others, and a
builder that dies releases the lock with its file descriptor: the next process builds instead. The rename
makes a half-written entry impossible to see.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from filelock import FileLock

logger = logging.getLogger(__name__)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else `$DR_CACHE`, else ~/.cache/dr."""
    if cache_dir:
        return Path(cache_dir)
    return Path(os.environ.get("DR_CACHE", Path.home() / ".cache" / "dr"))


def file_key(path: str | Path, *parts: object) -> str:
    """Key of a source file as it is now (absolute path, size, mtime) plus what reads it (`parts`: format,
    reader version, strictness...). An edited or replaced file gets a new key, hence a new entry."""
    path = Path(path)
    st = path.stat()
    text = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, *map(str, parts)])
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def text_key(*parts: object) -> str:
    return hashlib.sha1(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:20]


def prepare_once(final: Path, build: Callable[[Path], None], what: str) -> tuple[Path, bool]:
    """`(final, built_here)`: the directory `final`, built by `build(tmp_dir)` unless it exists.

    `build` writes its files into the empty directory it is given; on success the directory becomes
    `final`. An exception leaves nothing behind (and the lock free for the next try).
    """
    if final.is_dir():
        return final, False
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if final.is_dir():  # another process built it while this one waited
            logger.info("%s: prepared by another process, reusing %s", what, final)
            return final, False
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=final.name + ".tmp-"))
        try:
            build(tmp)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final, True


def save_arrays(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)


def load_arrays(directory: Path, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Memory-mapped (read-only): pages are read when touched and shared by every process on the machine."""
    return {name: np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in names}


class ArrayTable:
    """Read-only lookups over prepared arrays: one attribute per name in `COLUMNS` (set by subclasses)."""

    COLUMNS: tuple[str, ...] = ()

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        for name in self.COLUMNS:
            setattr(self, name, arrays[name])

    @classmethod
    def load(cls, directory: Path):
        return cls(load_arrays(directory, cls.COLUMNS))


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def encode_ids(ids: Iterable[str]) -> np.ndarray:
    """Ids as a numpy bytes array (UTF-8, `S<n>`): a quarter of the memory of `U<n>`, and byte order is
    code-point order, so a sorted array is sorted as the strings are."""
    return np.array([i.encode("utf-8") for i in ids], dtype=np.bytes_)


def find_ids(sorted_ids: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(codes, found)`: positions of `keys` (bytes) in `sorted_ids`, and whether each is there."""
    if len(sorted_ids) == 0:
        return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
    codes = np.minimum(np.searchsorted(sorted_ids, keys), len(sorted_ids) - 1)
    return codes, sorted_ids[codes] == keys


def find_id(sorted_ids: np.ndarray, key: str) -> int:
    """Position of `key` in `sorted_ids`, or -1."""
    raw = key.encode("utf-8")
    pos = int(np.searchsorted(sorted_ids, raw))
    return pos if pos < len(sorted_ids) and sorted_ids[pos] == raw else -1


class NpyAppender:
    """A 1-D `.npy` file written a part at a time, for columns whose length is known only at the end:
    the parts go to disk as they are computed instead of being held and concatenated in memory. (numpy
    pads the header for any length, so it is rewritten in place with the final shape.)"""

    def __init__(self, path: Path, dtype) -> None:
        self.path, self.dtype, self.n = path, np.dtype(dtype), 0
        self.file = open(path, "wb")
        self._header()

    def _header(self) -> None:
        np.lib.format.write_array_header_1_0(
            self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (self.n,)})

    def append(self, part: np.ndarray) -> None:
        np.ascontiguousarray(part, dtype=self.dtype).tofile(self.file)
        self.n += len(part)

    def close(self) -> None:
        data_start = self.file.tell() - self.n * self.dtype.itemsize
        self.file.seek(0)
        self._header()
        if self.file.tell() != data_start:  # pragma: no cover - numpy changed its header padding
            raise RuntimeError(f"{self.path}: the .npy header changed length when rewritten")
        self.file.close()
