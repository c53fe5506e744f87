"""FAISS build / search / save on numpy arrays, on GPU when faiss has GPUs, CPU otherwise.

`build_index(vectors, config)` takes a factory string (`Flat`, `IVF1024,Flat`, `HNSW32`, `PQ64`,
`OPQ64,PQ64`, ...), trains on a sample if the index needs training, adds the vectors and returns a
`DenseIndex` whose `search(queries, k)` gives `(scores, ids)` with ids as row numbers of the vectors.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from dr.index._faiss import faiss
from dr.io import atomic_path

logger = logging.getLogger(__name__)


@dataclass
class IndexConfig:
    """`device`: `auto` uses the GPUs faiss sees (else the CPU; a warning when CUDA is there but faiss has
    no GPU support), `gpu` requires one, `cpu`. Each process of a multi-process run places its index on
    its own GPU; a single process uses all of them.

    `gpu_mode`: with several GPUs in one process, `replicate` copies the index to each GPU (faster
    search), `shard` splits it (more room). `nprobe` (IVF) and `ef_search` (HNSW) trade speed for recall
    at search time. `train_size`: vectors sampled to train an index that needs training (IVF, PQ).
    `recall_check`: for an approximate index, this many queries are also searched exactly and the
    approximate index's recall@k against exact search is logged (0: off).
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
    recall_check: int = 0


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
        cpu = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        with atomic_path(path) as tmp:
            faiss.write_index(cpu, str(tmp))

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
    index = new_index(vectors.shape[1], config)
    if not index.is_trained:
        rng = np.random.default_rng(config.seed)
        n = min(config.train_size, len(vectors))
        sample = vectors[np.sort(rng.choice(len(vectors), n, replace=False))] if n < len(vectors) else vectors
        index.train(sample)
    index.add(vectors)
    return place_index(index, config)


def new_index(dim: int, config: IndexConfig) -> faiss.Index:
    """An empty `config.factory` index. PQ indexes skip faiss's polysemous training (the factory's default),
    which only reorders centroids for Hamming-distance search that dr never uses: it made training an
    IVF1024,PQ48 on 20,000 vectors take 83 s instead of 9 s here."""
    metric = faiss.METRIC_INNER_PRODUCT if config.metric == "ip" else faiss.METRIC_L2
    index = faiss.index_factory(dim, config.factory, metric)
    base = faiss.downcast_index(index.index if isinstance(index, faiss.IndexPreTransform) else index)
    if hasattr(base, "do_polysemous_training"):
        base.do_polysemous_training = False
    return index


def load_index(path: str | Path, config: IndexConfig | None = None) -> DenseIndex:
    """Read a faiss index file (written by `save` or by plain faiss) and place it per `config`."""
    config = config or IndexConfig()
    return place_index(faiss.read_index(str(path)), config)


def place_index(index: faiss.Index, config: IndexConfig, devices: Sequence[int] | None = None) -> DenseIndex:
    """Put `index` where `config.device` says: a CPU index, or a GPU index on `devices` (default: the GPUs
    `gpu_devices` gives this process). One device holds a full copy; several hold copies (`gpu_mode:
    replicate`) or one shard each (`shard`)."""
    log_faiss_build()
    if not use_gpu(config):
        n_gpu = gpu_count()
        why = ("index.device=cpu" if config.device == "cpu" else "faiss sees no GPU" if n_gpu == 0
               else f"faiss has no GPU version of {config.factory}")
        logger.info("faiss index %s on CPU (%s), %d vectors", config.factory, why, index.ntotal)
        return DenseIndex(index, config, on_gpu=False)
    devices = list(devices) if devices is not None else gpu_devices(gpu_count(), *local_process())
    if len(devices) == 1:
        gpu_index = faiss.index_cpu_to_gpu(_gpu_resources(devices[0]), devices[0], index)
    else:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = config.gpu_mode == "shard"
        gpu_index = faiss.index_cpu_to_gpus_list(index, co=options, gpus=devices)
    params = faiss.GpuParameterSpace()
    params.initialize(gpu_index)
    if "IVF" in config.factory:
        params.set_index_parameter(gpu_index, "nprobe", config.nprobe)
    logger.info("faiss index %s on GPU(s) %s (%s), %d vectors", config.factory, devices,
                config.gpu_mode if len(devices) > 1 else "one device", index.ntotal)
    return DenseIndex(gpu_index, config, on_gpu=True)


def use_gpu(config: IndexConfig) -> bool:
    """Whether `config` puts the index on a GPU here; `device: gpu` without one is an error, and `auto`
    warns when CUDA is present but this faiss build has no GPU support."""
    n_gpu = gpu_count()
    if config.device == "gpu" and n_gpu == 0:
        raise RuntimeError("index.device=gpu but faiss sees no GPU (install faiss-gpu: pip install 'dr[gpu]')")
    if config.device == "gpu" and not _gpu_supported(config.factory):
        raise RuntimeError(f"index.device=gpu but faiss has no GPU version of {config.factory!r} (use Flat or IVF)")
    if config.device == "auto" and n_gpu == 0 and _cuda_present():
        _warn_once("CUDA is present but this faiss build has no GPU support, so indexes stay on the CPU: "
                   "install the GPU build with pip install 'dr[gpu]' (and not faiss-cpu beside it)")
    return config.device != "cpu" and n_gpu > 0 and _gpu_supported(config.factory)


def gpu_devices(n_gpu: int, local_rank: int, local_world: int) -> list[int]:
    """The GPUs one process's index goes on: with several processes on a node, each its own device
    (`local_rank` modulo the count), never every process on every GPU; a single process uses them all."""
    if n_gpu <= 0:
        return []
    if local_world > 1:
        return [local_rank % n_gpu]
    return list(range(n_gpu))


def local_process() -> tuple[int, int]:
    """(local rank, processes on this node) from the launcher's environment (torchrun, accelerate)."""
    return int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))


_RESOURCES: dict[int, object] = {}
_WARNED: set[str] = set()


def _gpu_resources(device: int):
    if device not in _RESOURCES:
        _RESOURCES[device] = faiss.StandardGpuResources()
    return _RESOURCES[device]


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


def _cuda_present() -> bool:
    try:
        import torch
    except ImportError:  # faiss without torch: nothing to compare with
        return False
    return torch.cuda.is_available()


def faiss_build() -> str:
    """Which faiss is active: version, GPU support, and the installed distribution(s)."""
    from importlib import metadata

    dists = []
    for name in ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss"):
        try:
            dists.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    gpu = "GPU" if hasattr(faiss, "StandardGpuResources") else "CPU-only"
    return f"faiss {faiss.__version__} ({gpu} build; installed: {', '.join(dists) or 'unknown'})"


def log_faiss_build() -> None:
    """Log the active faiss once; warn when two builds are installed (they overwrite one `faiss` module)."""
    if "build" in _WARNED:
        return
    _WARNED.add("build")
    build = faiss_build()
    logger.info("%s", build)
    if build.count("faiss-") > 1:
        logger.warning("more than one faiss distribution is installed; they share one `faiss` module, so "
                       "the active build is whichever was installed last: keep one (pip uninstall the other)")


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
