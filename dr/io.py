"""Atomic file writes: one helper for every file dr writes that a reader or a resumed run may open.

A file is written under a temporary name beside its destination and renamed over it (`os.replace`,
atomic on POSIX and Windows), so a reader sees the old file or the new one, never half of one. The
temporary name is hidden and carries the writer's pid, so concurrent writers (several processes filling
one cache) never write into each other's file; it keeps the destination's suffix, so writers that append
one (`np.save`) write where they are told. On an error the temporary file is removed; after a SIGKILL it
stays, hidden, beside the destination.

    with atomic_path(path) as tmp:      # any writer that takes a path
        np.save(tmp, array, allow_pickle=False)
    with atomic_open(path) as f:        # a text stream
        f.write(...)
    atomic_write_text(path, text); atomic_write_json(path, obj)
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def temporary_name(path: str | Path) -> Path:
    """The hidden, pid-unique temporary name beside `path`: `dir/.NAME.PID.tmp.SUFFIX`."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (its directory created); on a clean exit it replaces `path`,
    on an exception it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """`open(path, mode)` on a temporary file that replaces `path` when the block ends without error."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
        yield f


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj: object, indent: int | None = 2) -> None:
    """`obj` as JSON (and a final newline), written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")
