"""One sharded encode -> search path for evaluation, dev selection, the miner and `dr.mine`.

With W processes (torch.distributed; W = 1 without it) every process runs the same calls:
- `encode_corpus`: the corpus is planned in length-sorted batches (`dr.encoding.plan`), process r encodes
  batches r, r+W, ... and keeps (or caches, as part r of W) only those rows;
- `encode_texts`: queries likewise, then every process gets all of them;
- `search`: each process searches its shard, the per-shard top-k lists are gathered and merged
  (`dr.index.merge_topk`: by score, then row), so every process ends with the global top-k.
The plan does not depend on W, so each text is encoded in the same batch whatever W is, and W processes
give the same embeddings, and the same run, as one.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dr.dist import all_gather_object, barrier, release_free_memory, world
from dr.encoding.cache import EmbeddingCache, EntryMeta, Segment, ShardEmbeddings, _release, cache_key
from dr.encoding.plan import group_batches, length_sorted_batches, rank_batches
from dr.index import IndexConfig, exact_search, merge_topk, recall_at_k, search_blocks
from dr.io import atomic_path

logger = logging.getLogger(__name__)


class Encoder(Protocol):
    """What the sharded path needs from an encoder (DualEncoder, or a stand-in)."""

    @property
    def dim(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    def identity(self, tower: str) -> str: ...
    def token_lengths(self, tower: str, texts: Sequence[str]) -> np.ndarray: ...
    def encode_batches(self, tower: str, texts: Sequence[str], batches: Sequence[np.ndarray], desc: str
                       ) -> np.ndarray: ...


@dataclass
class EncodeStats:
    """Passages encoded and seconds spent by this process (cache hits encode none)."""

    passages: int = 0
    seconds: float = 0.0
    cache_hits: int = 0

    @property
    def passages_per_s(self) -> float:
        return self.passages / self.seconds if self.seconds else float("nan")


_LENGTHS: dict[tuple, np.ndarray] = {}


_LENGTH_CHUNK = 8192


def corpus_lengths(encoder: Encoder, corpus, cache: EmbeddingCache | None = None) -> np.ndarray:
    """Token length of every active passage (in `corpus.active_rows` order); each process tokenizes a
    contiguous 1/W and the lengths are gathered. Kept for the process's life (every refresh reuses them)
    and, with a cache, on disk beside the embeddings (`lengths/<key>.npy`) for later runs."""
    key = (encoder.identity("tokenizer"), corpus.fingerprint, len(corpus))
    if key in _LENGTHS:
        return _LENGTHS[key]
    path = cache.directory.parent / "lengths" / f"{cache_key(*map(str, key))}.npy" if cache is not None else None
    if path is not None and path.exists():
        lengths = np.load(path, allow_pickle=False)
    else:
        rank, size = world()
        rows = np.array_split(corpus.active_rows, size)[rank]
        # in chunks of _LENGTH_CHUNK texts: a fast tokenizer's batch output for 100k passages holds ~1 GB
        chunks = [np.empty(0, np.int64)]
        for i in range(0, len(rows), _LENGTH_CHUNK):
            chunks.append(encoder.token_lengths("passage", corpus.texts(rows[i : i + _LENGTH_CHUNK])))
            release_free_memory()
        mine = np.concatenate(chunks)
        lengths = np.concatenate(all_gather_object(mine)).astype(np.int32)
        if path is not None and rank == 0:
            with atomic_path(path) as tmp:
                np.save(tmp, lengths, allow_pickle=False)
    _LENGTHS.clear()  # one corpus at a time: a miner's corpus, or the evaluation's current one
    _LENGTHS[key] = lengths
    return lengths


def encode_corpus(encoder: Encoder, corpus, cache: EmbeddingCache | None = None, stats: EncodeStats | None = None,
                  group_texts: int = 16_384) -> ShardEmbeddings:
    """This process's shard of the corpus embeddings: from memory, from a complete cache entry (rows
    [r*N/W, (r+1)*N/W) of its parts, memory-mapped), or encoded now (and cached as part r of W).
    Collective: every process calls it, and they agree on hit or miss."""
    rank, size = world()
    stats = stats if stats is not None else EncodeStats()
    meta = EntryMeta(encoder.identity("passage"), corpus.fingerprint, len(corpus), encoder.dim)
    if cache is not None:
        shard = _from_cache(cache, meta, rank, size)
        if shard is not None:
            stats.cache_hits += 1
            return shard
    start = time.perf_counter()
    batches = rank_batches(length_sorted_batches(corpus_lengths(encoder, corpus, cache), encoder.batch_size),
                           rank, size)
    n = sum(len(b) for b in batches)
    writer = cache.create_part(meta, rank, size, n) if cache is not None and cache.persist else None
    rows_out = writer.rows if writer else np.empty(n, np.int64)
    emb_out = writer.emb if writer else np.empty((n, encoder.dim), np.float32)
    done = 0
    desc = corpus.source + (f" [{rank}/{size}]" if size > 1 else "")
    for group in group_batches(batches, group_texts):
        rows = corpus.active_rows[np.concatenate(group)]
        bounds = np.cumsum([0] + [len(b) for b in group])
        local = [np.arange(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        rows_out[done : done + len(rows)] = rows
        emb_out[done : done + len(rows)] = encoder.encode_batches("passage", corpus.texts(rows), local, desc=desc)
        if writer:
            _release(emb_out, done, done + len(rows))  # written through to the file; RSS stays at one group
        done += len(rows)
        release_free_memory()
    elapsed = time.perf_counter() - start
    stats.passages += n
    stats.seconds += elapsed
    logger.info("encoded %d passages in %.1fs (%.1f/s)%s", n, elapsed, n / max(elapsed, 1e-9),
                f" (shard {rank} of {size})" if size > 1 else "")
    if writer:
        writer.commit()
        _finish_entry(cache, meta, n)
        shard = ShardEmbeddings([writer.segment()], encoder.dim)
    else:
        shard = ShardEmbeddings([Segment(rows_out, emb_out)], encoder.dim)
    if cache is not None:
        cache.remember(meta, rank, size, shard)
    return shard


def _from_cache(cache: EmbeddingCache, meta: EntryMeta, rank: int, size: int) -> ShardEmbeddings | None:
    """This process's shard from memory or disk if every process has it there, else None. A shard kept
    in memory only (a model in training) is written to disk once the cache is asked to persist."""
    remembered = cache.remembered(meta, rank, size)
    on_disk = cache.manifest(meta) is not None
    flags = all_gather_object((remembered is not None, on_disk))
    if all(f[0] for f in flags):
        if cache.persist and not all(f[1] for f in flags):
            rows, emb = remembered.rows(), remembered.matrix(remembered.rows())
            writer = cache.create_part(meta, rank, size, len(rows))
            writer.rows[:], writer.emb[:] = rows, emb
            writer.commit()
            _finish_entry(cache, meta, len(rows))
        return remembered
    if all(f[1] for f in flags):
        shard = cache.open(meta, meta.rows * rank // size, meta.rows * (rank + 1) // size)
        cache.remember(meta, rank, size, shard)
        return shard
    return None


def _finish_entry(cache: EmbeddingCache, meta: EntryMeta, n: int) -> None:
    """Once every process wrote its part, the first writes the manifest (the entry is then complete)."""
    rank = world()[0]
    if rank == 0:
        cache.invalidate(meta)  # a rejected manifest must not describe the new parts
    barrier()
    counts = all_gather_object(n)
    if rank == 0:
        cache.write_manifest(meta, counts)
    barrier()


def encode_texts(encoder: Encoder, tower: str, texts: Sequence[str], desc: str) -> np.ndarray:
    """(len(texts), H) float32 on every process; each process encodes its batches of the plan."""
    rank, size = world()
    out = np.empty((len(texts), encoder.dim), np.float32)
    if not len(texts):
        return out
    batches = rank_batches(length_sorted_batches(encoder.token_lengths(tower, texts), encoder.batch_size), rank, size)
    positions = np.concatenate(batches) if batches else np.empty(0, np.int64)
    local, offset = [], 0
    for b in batches:
        local.append(np.arange(offset, offset + len(b)))
        offset += len(b)
    emb = encoder.encode_batches(tower, [texts[i] for i in positions], local, desc=desc)
    for pos, part in (all_gather_object((positions, emb)) if size > 1 else [(positions, emb)]):
        out[pos] = part
    return out


def corpus_matrix(encoder: Encoder, corpus, cache: EmbeddingCache | None = None,
                  stats: EncodeStats | None = None) -> np.ndarray:
    """(len(corpus), H) float32 in `corpus.active_rows` order on every process, for what needs the whole
    corpus in one array (ADORE's and JPQ's fixed indexes): the shards are gathered."""
    shard = encode_corpus(encoder, corpus, cache, stats)
    rank, size = world()
    if size == 1:
        return shard.matrix(corpus.active_rows)
    out = np.empty((len(corpus), encoder.dim), np.float32)
    where = np.full(len(corpus.ids), -1, np.int64)
    where[corpus.active_rows] = np.arange(len(corpus))
    for rows, emb in all_gather_object((shard.rows(), shard.matrix(shard.rows()))):
        out[where[rows]] = emb
    return out


def search(shard: ShardEmbeddings, queries: np.ndarray, k: int, config: IndexConfig,
           gather_queries: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """Global top-k (scores (Q, k), corpus rows (Q, k), -1 where fewer) of `queries` on every process:
    each searches its shard, then the lists are merged in chunks of `gather_queries` queries."""
    rank, size = world()
    k_local = min(k, max(len(shard), 1))
    scores, rows = search_blocks(queries, shard.blocks, len(shard), k_local, config)
    if size > 1:
        merged = [merge_topk(all_gather_object((scores[i : i + gather_queries], rows[i : i + gather_queries])), k)
                  for i in range(0, len(queries), gather_queries)]
        scores = np.concatenate([m[0] for m in merged]) if merged else scores[:, :0]
        rows = np.concatenate([m[1] for m in merged]) if merged else rows[:, :0]
    if config.recall_check and config.factory != "Flat":
        _log_recall(shard, queries, k, rows, config)
    return scores, rows


def _log_recall(shard: ShardEmbeddings, queries: np.ndarray, k: int, approx_rows: np.ndarray,
                config: IndexConfig) -> float:
    """Recall@k of the approximate index against exact search on the first `config.recall_check` queries."""
    n = min(config.recall_check, len(queries))
    exact = exact_search(queries[:n], shard.blocks(), k, config.metric)
    if world()[1] > 1:
        exact = merge_topk(all_gather_object(exact), k)
    value = recall_at_k(approx_rows[:n], exact[1])
    logger.info("index %s: recall@%d %.4f against exact search on %d queries", config.factory, k, value, n)
    return value
