"""Search over embeddings held as blocks (memory-mapped shard files, or one process's shard), without
ever concatenating them into one array.

A block is `(ids, vectors)`: (n,) int64 ids (corpus rows) and (n, H) vectors of any float dtype.
`exact_search` runs faiss's brute-force k-NN block by block and keeps a running top-k (`merge_topk`), so
memory is one block plus the (Q, k) result. `build_block_index` trains an approximate index on a sample
drawn across the blocks, then adds them block by block. Per-process results are merged with `merge_topk`,
which orders by score, then by id, so the merged ranking does not depend on how rows were split.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from dr.index._faiss import faiss
from dr.index.faiss_index import DenseIndex, IndexConfig, _as_float32, new_index, place_index, use_gpu

logger = logging.getLogger(__name__)

Block = tuple[np.ndarray, np.ndarray]  # (ids (n,), vectors (n, H))


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int, rows_per_chunk: int = 1024
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per-shard (scores (Q, k_s), ids (Q, k_s)) -> the overall top-k, best first; ties by smaller id.
    Missing hits (id -1) sort last. Done `rows_per_chunk` queries at a time, so the sort's temporaries
    stay small whatever Q is."""
    n = len(parts[0][0])
    width = min(k, sum(p[0].shape[1] for p in parts))
    out_s, out_i = np.empty((n, width), np.float32), np.empty((n, width), np.int64)
    for lo in range(0, n, rows_per_chunk):
        hi = min(lo + rows_per_chunk, n)
        scores = np.concatenate([p[0][lo:hi] for p in parts], axis=1)
        ids = np.concatenate([p[1][lo:hi] for p in parts], axis=1)
        missing = ids < 0
        scores = np.where(missing, -np.inf, scores)
        order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, ids), -scores), axis=1)[:, :k]
        out_s[lo:hi], out_i[lo:hi] = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    return out_s, out_i


def exact_search(queries: np.ndarray, blocks: Iterable[Block], k: int, metric: str = "ip"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of (Q, H) `queries` over every block: scores (Q, k) float32 and ids (Q, k) int64,
    best first; -1 ids (and -inf scores) where there are fewer than k vectors in all."""
    q = _as_float32(queries)
    fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    best = (np.full((len(q), 0), -np.inf, np.float32), np.full((len(q), 0), -1, np.int64))
    for ids, vectors in blocks:
        if len(ids) == 0:
            continue
        kk = min(k, len(ids))
        s, local = faiss.knn(q, _as_float32(vectors), kk, metric=fmetric)
        if metric != "ip":
            s = -s  # merge_topk keeps the largest: negate L2 distances
        found = np.where(local >= 0, np.asarray(ids, np.int64)[np.clip(local, 0, None)], -1)
        best = merge_topk([best, (s, found)], k)
    scores, ids = _pad(best[0].astype(np.float32), best[1], k)
    return (scores if metric == "ip" else -scores), ids


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad (Q, k') results to k columns with -inf / -1 (fewer than k vectors in all)."""
    if scores.shape[1] >= k:
        return scores, ids
    extra = k - scores.shape[1]
    return (np.pad(scores, ((0, 0), (0, extra)), constant_values=-np.inf),
            np.pad(ids, ((0, 0), (0, extra)), constant_values=-1))


def sample_rows(blocks: Iterable[Block], total: int, n: int, seed: int) -> np.ndarray:
    """(min(n, total), H) float32 training sample drawn uniformly without replacement across blocks
    holding `total` vectors in all."""
    take = np.sort(np.random.default_rng(seed).choice(total, min(n, total), replace=False))
    out, start = [], 0
    for _, vectors in blocks:
        local = take[(take >= start) & (take < start + len(vectors))] - start
        if len(local):
            out.append(_as_float32(vectors[local]))
        start += len(vectors)
    return np.concatenate(out)


class BlockIndex:
    """An index built over blocks: faiss positions are mapped back to the blocks' ids."""

    def __init__(self, index: DenseIndex, ids: np.ndarray) -> None:
        self.index = index
        self.ids = ids

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, pos = self.index.search(queries, k)
        return _pad(scores, np.where(pos >= 0, self.ids[np.clip(pos, 0, None)], -1), k)


def build_block_index(blocks: Callable[[], Iterable[Block]], total: int, config: IndexConfig,
                      devices: Sequence[int] | None = None) -> BlockIndex:
    """`config.factory` over `total` vectors: trained on up to `config.train_size` of them sampled across
    the blocks, then filled block by block (`blocks()` is called once per pass, so memory-mapped blocks
    are never all in memory); placed on `devices` (GPU ids; see `gpu_devices`) when faiss has GPUs."""
    if total <= 0:
        raise ValueError("index needs at least one vector")
    placed, ids = None, []
    for block_ids, vectors in blocks():
        if placed is None:  # trained on the CPU, then placed empty, so a GPU index is filled on the GPU
            index = new_index(vectors.shape[1], config)
            if not index.is_trained:
                index.train(sample_rows(blocks(), total, config.train_size, config.seed))
            placed = place_index(index, config, devices)
        placed.index.add(_as_float32(vectors))
        ids.append(np.asarray(block_ids, np.int64))
    return BlockIndex(placed, np.concatenate(ids))


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (ids of -1 ignored)."""
    values = []
    for a, e in zip(approx_ids, exact_ids):
        want = set(e[e >= 0].tolist())
        if want:
            values.append(len(want & set(a[a >= 0].tolist())) / len(want))
    return float(np.mean(values)) if values else float("nan")


def search_blocks(queries: np.ndarray, blocks: Callable[[], Iterable[Block]], total: int, k: int,
                  config: IndexConfig, devices: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k over `total` vectors in blocks with `config`: exact blockwise search for a CPU `Flat` index
    (no copy of the vectors), otherwise an index built over the blocks (`build_block_index`)."""
    if config.factory == "Flat" and not use_gpu(config):
        return exact_search(queries, blocks(), k, config.metric)
    return build_block_index(blocks, total, config, devices).search(queries, k)
