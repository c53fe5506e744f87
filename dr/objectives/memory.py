"""Cross-batch memory (Wang et al., CVPR 2020, "Cross-Batch Memory for Embedding Learning", XBM; the
queue of MoCo, He et al. 2020): the passage embeddings of recent steps, kept without gradient, scored
against each step's queries as extra negatives.

A ring buffer of `size` embeddings. Each entry records the passage's key (a stable hash of its id, so a
query's own positive met again from an earlier step is masked, not taken for a negative) and the tick it
was written at; an entry from more than `max_age` pushes ago is not used (0: no age limit), which bounds how stale
the encoder that made it may be. One tick is one `push`, one training micro-batch: with `max_age` k only the
entries of the last k pushes are used.

Every process pushes the same global batch (the passages gathered from all processes, in rank order), so
every process holds the same memory and computes the same negatives. The buffers are part of the
objective's state dict, so a checkpoint holds them and a resume continues with the same memory.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import nn


def passage_key(pid: str) -> int:
    """A stable signed 64-bit key of a passage id (the same in every process and run, unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(pid.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def passage_keys(pids: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.tensor([passage_key(p) for p in pids], dtype=torch.long, device=device)


class CrossBatchMemory(nn.Module):
    """`push(embeddings, keys)` after a step's loss; `entries()` -> the (embeddings, keys) usable now."""

    def __init__(self, size: int, dim: int, max_age: int = 0) -> None:
        super().__init__()
        if size < 1 or dim < 1 or max_age < 0:
            raise ValueError(f"memory needs size >= 1, dim >= 1 and max_age >= 0, got {size}, {dim}, {max_age}")
        self.size, self.max_age = size, max_age
        self.register_buffer("embeddings", torch.zeros(size, dim))
        self.register_buffer("keys", torch.zeros(size, dtype=torch.long))
        self.register_buffer("written", torch.full((size,), -1, dtype=torch.long))  # tick; -1: empty
        self.register_buffer("tick", torch.zeros((), dtype=torch.long))  # pushes so far
        self.register_buffer("cursor", torch.zeros((), dtype=torch.long))  # next slot to write

    def usable(self) -> torch.Tensor:
        """(size,) bool: written by one of the last `max_age` pushes (every written entry when max_age is 0).
        `written` holds the tick count after the push that wrote the entry, so the last push's entries are
        age `tick - written` = 0."""
        ok = self.written >= 0
        if self.max_age:
            ok &= (self.tick - self.written) < self.max_age
        return ok

    def entries(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The usable entries, oldest slot first: (n, dim) embeddings and (n,) keys."""
        ok = self.usable()
        return self.embeddings[ok], self.keys[ok]

    @torch.no_grad()
    def push(self, embeddings: torch.Tensor, keys: torch.Tensor) -> None:
        """Write `embeddings` (n, dim; detached, stored in fp32) and their `keys` (n,), overwriting the oldest
        slots; when n > size only the last `size` rows are kept."""
        if embeddings.shape[0] != keys.shape[0]:
            raise ValueError(f"{embeddings.shape[0]} embeddings but {keys.shape[0]} keys")
        embeddings, keys = embeddings[-self.size:], keys[-self.size:]
        n = embeddings.shape[0]
        slots = (self.cursor + torch.arange(n, device=self.cursor.device)) % self.size
        self.embeddings[slots] = embeddings.detach().to(self.embeddings.dtype)
        self.keys[slots] = keys.to(self.keys.device)
        self.tick += 1
        self.written[slots] = self.tick
        self.cursor.copy_((self.cursor + n) % self.size)
