"""Batch plans for encoding: which texts go together in one forward pass.

Texts are sorted by token length (longest first, ties in input order) and cut into batches, so each batch
pads little. The plan depends only on the lengths and the batch size, never on how many processes share
the work: process r of W encodes batches r, r + W, r + 2W, ... So every text is encoded in the same batch,
with the same padding, whatever W is, and a sharded encoding gives the same embeddings as one process.
"""
from __future__ import annotations

import numpy as np


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """(N,) lengths -> batches of positions (int64), longest first; equal lengths keep input order.

    >>> [b.tolist() for b in length_sorted_batches(np.array([3, 9, 3, 5]), 2)]
    [[1, 3], [0, 2]]
    """
    if batch_size <= 0:
        raise ValueError(f"batch size must be > 0, got {batch_size}")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def rank_batches(batches: list[np.ndarray], rank: int, world: int) -> list[np.ndarray]:
    """The batches process `rank` of `world` encodes: every `world`-th, starting at `rank` (the batches
    are length-sorted, so each process gets a similar mix of long and short ones).

    >>> rank_batches([np.array([0]), np.array([1]), np.array([2])], 1, 2)
    [array([1])]
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} out of range for world size {world}")
    return batches[rank::world]


def group_batches(batches: list[np.ndarray], max_texts: int) -> list[list[np.ndarray]]:
    """Consecutive batches grouped so that a group holds at most `max_texts` texts (at least one batch):
    the texts of one group are read from the corpus at once, which bounds memory."""
    groups: list[list[np.ndarray]] = []
    size = 0
    for b in batches:
        if groups and size + len(b) <= max_texts:
            groups[-1].append(b)
            size += len(b)
        else:
            groups.append([b])
            size = len(b)
    return groups
