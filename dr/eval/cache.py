"""Corpus embeddings cached on disk by (model weights, encoder settings, corpus), so an unchanged model
never encodes the same corpus twice. Files are plain .npy read with allow_pickle=False."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Keys this process wrote to, and read from, a cache directory: a key read from disk that this process did
# not write is an encoding an earlier run did (`reused_from_earlier_runs`, for the reports' wall times).
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


class EmbeddingCache:
    """Directory of `<key>.npy` files (writes atomic: temporary file, then rename) in front of which the
    last `memory_entries` arrays stay in memory. With `persist=False` nothing new is written to disk:
    a model in training changes at every evaluation, so its embeddings are only worth keeping in memory
    (dev and test sets that share a corpus then encode it once)."""

    def __init__(self, directory: str | Path, persist: bool = True, memory_entries: int = 1) -> None:
        self.directory = Path(directory)
        self.persist = persist
        self.memory_entries = memory_entries
        self._memory: dict[str, np.ndarray] = {}

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        if key in self._memory:
            if self.persist and not self.path(key).exists():  # kept in memory only, now worth keeping
                self._write(key, self._memory[key])
            return self._memory[key]
        path = self.path(key)
        if not path.exists():
            return None
        logger.info("corpus embeddings from cache %s", path)
        if str(path) not in _WRITTEN_HERE:
            _REUSED.add(str(path))
        return np.load(path, allow_pickle=False, mmap_mode="r")

    def put(self, key: str, array: np.ndarray) -> None:
        if self.memory_entries:
            self._memory[key] = array
            while len(self._memory) > self.memory_entries:
                self._memory.pop(next(iter(self._memory)))
        if self.persist:
            self._write(key, array)

    def _write(self, key: str, array: np.ndarray) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{key}.{os.getpid()}.tmp.npy"
        np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, self.path(key))
        _WRITTEN_HERE.add(str(self.path(key)))


def cache_key(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:24]
