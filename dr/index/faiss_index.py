"""FAISS build / search / save on numpy arrays, on GPU when faiss has GPUs, CPU otherwise.

`build_index(vectors, config)` takes a factory string (`Flat`, `IVF1024,Flat`, `HNSW32`, `PQ64`,
`OPQ64,PQ64`, ...), trains on a sample if the index needs training, adds the vectors and returns a
`DenseIndex` whose `search(queries, k)` gives `(scores, ids)` with ids as row numbers of the vectors.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class IndexConfig:
    """`device`: `auto` uses every GPU faiss sees (else CPU, with a log line), `gpu` requires one, `cpu`.

    `gpu_mode`: `replicate` copies the index to each GPU (faster search), `shard` splits it (more room).
    `nprobe` (IVF) and `ef_search` (HNSW) trade speed for recall at search time.
    """

    factory: str = "Flat"
    metric: Literal["ip", "l2"] = "ip"
    device: Literal["auto", "cpu", "gpu"] = "auto"
    gpu_mode: Literal["replicate", "shard"] = "replicate"
    train_size: int = 262_144
    nprobe: int = 32
    ef_search: int = 128
    search_batch_size: int = 4096
    seed: int = 0


def gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


class DenseIndex:
    """A FAISS index plus the settings used to search it."""

    def __init__(self, index: faiss.Index, config: IndexConfig, on_gpu: bool = False) -> None:
        self.index = index
        self.config = config
        self.on_gpu = on_gpu
        self._apply_search_params(index)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, H) float32 queries -> scores (Q, k) float32 and ids (Q, k) int64, best first.

        Rows past the index size are padded by faiss with id -1; callers drop them.
        """
        queries = _as_float32(queries)
        k = min(k, self.ntotal)
        scores = np.empty((len(queries), k), dtype=np.float32)
        ids = np.empty((len(queries), k), dtype=np.int64)
        step = self.config.search_batch_size
        for start in range(0, len(queries), step):
            s, i = self.index.search(queries[start : start + step], k)
            scores[start : start + step], ids[start : start + step] = s, i
        return scores, ids

    def save(self, path: str | Path) -> None:
        """Write the (CPU copy of the) index atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cpu = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        faiss.write_index(cpu, str(tmp))
        os.replace(tmp, path)

    def _apply_search_params(self, index: faiss.Index) -> None:
        if self.on_gpu:
            return  # nprobe on GPU indexes is set through GpuParameterSpace below
        base = faiss.downcast_index(index.index if isinstance(index, faiss.IndexPreTransform) else index)
        if hasattr(base, "nprobe"):
            base.nprobe = self.config.nprobe
        if hasattr(base, "hnsw"):
            base.hnsw.efSearch = self.config.ef_search


def build_index(vectors: np.ndarray, config: IndexConfig) -> DenseIndex:
    """Build `config.factory` over (N, H) `vectors`; rows become ids 0..N-1."""
    vectors = _as_float32(vectors)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"index needs a non-empty (N, H) array, got shape {vectors.shape}")
    metric = faiss.METRIC_INNER_PRODUCT if config.metric == "ip" else faiss.METRIC_L2
    index = faiss.index_factory(vectors.shape[1], config.factory, metric)
    if not index.is_trained:
        rng = np.random.default_rng(config.seed)
        n = min(config.train_size, len(vectors))
        sample = vectors[np.sort(rng.choice(len(vectors), n, replace=False))] if n < len(vectors) else vectors
        index.train(sample)
    index.add(vectors)
    return place_index(index, config)


def load_index(path: str | Path, config: IndexConfig | None = None) -> DenseIndex:
    """Read a faiss index file (written by `save` or by plain faiss) and place it per `config`."""
    config = config or IndexConfig()
    return place_index(faiss.read_index(str(path)), config)


def place_index(index: faiss.Index, config: IndexConfig) -> DenseIndex:
    n_gpu = gpu_count()
    if config.device == "gpu" and n_gpu == 0:
        raise RuntimeError("index.device=gpu but faiss sees no GPU (install faiss-gpu: pip install 'dr[gpu]')")
    gpu_ok = _gpu_supported(config.factory)
    if config.device == "gpu" and not gpu_ok:
        raise RuntimeError(f"index.device=gpu but faiss has no GPU version of {config.factory!r} (use Flat or IVF)")
    if config.device == "cpu" or n_gpu == 0 or not gpu_ok:
        why = ("index.device=cpu" if config.device == "cpu" else "faiss sees no GPU" if n_gpu == 0
               else f"faiss has no GPU version of {config.factory}")
        logger.info("faiss index %s on CPU (%s), %d vectors", config.factory, why, index.ntotal)
        return DenseIndex(index, config, on_gpu=False)
    options = faiss.GpuMultipleClonerOptions()
    options.shard = config.gpu_mode == "shard"
    gpu_index = faiss.index_cpu_to_all_gpus(index, co=options)
    params = faiss.GpuParameterSpace()
    params.initialize(gpu_index)
    if "IVF" in config.factory:
        params.set_index_parameter(gpu_index, "nprobe", config.nprobe)
    logger.info("faiss index %s on %d GPU(s) (%s), %d vectors", config.factory, n_gpu, config.gpu_mode, index.ntotal)
    return DenseIndex(gpu_index, config, on_gpu=True)


def _gpu_supported(factory: str) -> bool:
    """faiss-gpu implements flat and IVF indexes; HNSW and (O)PQ without IVF stay on the CPU."""
    return "HNSW" not in factory and ("IVF" in factory or "PQ" not in factory)


def _as_float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def kmeans_assign(vectors: np.ndarray, k: int, seed: int = 0, spherical: bool = False,
                  niter: int = 25) -> np.ndarray:
    """(N, H) float32 -> (N,) int64 cluster of each row after k-means with `k` centroids (faiss).
    `spherical`: centroids are L2-normalized and rows assigned by inner product (cosine embeddings)."""
    n = vectors.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= {n} rows, got k={k}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    kmeans = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=spherical,
                          min_points_per_centroid=1, max_points_per_centroid=max(256, n // k + 1))
    kmeans.train(x)
    _, labels = kmeans.index.search(x, 1)
    return labels[:, 0].astype(np.int64)
