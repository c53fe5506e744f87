"""Product quantization with trainable centroids (JPQ: Zhan et al., CIKM 2021).

`build_pq_index` trains OPQ + PQ with faiss on passage embeddings and adds them. The index is
`OPQ{M},IVF1,PQ{M}x{bits}` with inner product, as in the authors' code: one inverted list holds every
code, and the single coarse centroid is folded into the PQ centroids (and zeroed), so a passage's
reconstruction is exactly the concatenation of its M centroids. faiss-gpu implements IVF-PQ (not a bare
PQ), so the same file is searched on a GPU when one is present.

`ProductQuantizer` holds the OPQ rotation and the codes fixed and the centroids as an `nn.Parameter`;
`score` is differentiable with respect to the centroids (and the query). `sync()` copies the current
centroids back into the faiss index, which is what training searches (end-to-end negative sampling)
and what `export` writes: plain `faiss.read_index` loads that file and searches it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dr.index._faiss import faiss
from dr.index.faiss_index import DenseIndex, IndexConfig, gpu_count, place_index
from dr.io import atomic_path, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)


def pq_factory(subvectors: int, bits: int, opq: bool) -> str:
    """The faiss factory string of JPQ's index: `OPQ{M},IVF1,PQ{M}x{bits}` (no OPQ: `IVF1,PQ{M}x{bits}`)."""
    return f"{f'OPQ{subvectors},' if opq else ''}IVF1,PQ{subvectors}x{bits}"


def build_pq_index(vectors: np.ndarray, config) -> faiss.Index:
    """Train OPQ + PQ on (N, d) `vectors` (a sample of `train_size`), add them all, fold the coarse centroid.
    `config`: `subvectors`, `bits`, `opq`, `opq_iterations`, `train_size`, `seed` (JPQ's QuantizerConfig)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if d % config.subvectors:
        raise ValueError(f"quantizer.subvectors={config.subvectors} must divide the embedding size {d}")
    index = faiss.index_factory(d, pq_factory(config.subvectors, config.bits, config.opq), faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.cp.seed = config.seed
    ivf.pq.cp.seed = config.seed
    ivf.pq.cp.min_points_per_centroid = 1  # warned about once below instead of once per k-means run
    opq_pq = None
    if config.opq:  # OPQ's alternating optimization trains its own PQ, many times
        opq = faiss.downcast_VectorTransform(index.chain.at(0))
        opq_pq = faiss.ProductQuantizer(d, config.subvectors, config.bits)
        opq_pq.cp.min_points_per_centroid = 1
        opq_pq.cp.seed = config.seed
        opq.pq = opq_pq
        opq.niter = config.opq_iterations  # opq_pq stays referenced here until training is done
    rng = np.random.default_rng(config.seed)
    sample = x[np.sort(rng.choice(n, config.train_size, replace=False))] if n > config.train_size else x
    if len(sample) < (1 << config.bits):
        raise ValueError(f"PQ with {1 << config.bits} centroids needs at least that many vectors, got {len(sample)}")
    if config.opq and len(sample) < 10 * (1 << config.bits):  # faiss aborts the process (not an exception)
        raise ValueError(f"OPQ with {1 << config.bits} centroids per sub-vector needs at least "
                         f"{10 * (1 << config.bits)} vectors, got {len(sample)}: set quantizer.opq=false or fewer bits")
    if len(sample) < 39 * (1 << config.bits):
        logger.warning("training PQ with %d vectors for %d centroids per sub-vector (faiss suggests >= %d)",
                       len(sample), 1 << config.bits, 39 * (1 << config.bits))
    index.train(sample)
    del opq_pq
    _fold_coarse_centroid(index)
    index.add(x)
    return index


def _fold_coarse_centroid(index: faiss.Index) -> None:
    """IVF1's one coarse centroid c: residuals are x - c, so c is added to every PQ centroid and zeroed.
    Reconstructions (and inner products) are unchanged; afterwards they need no coarse term."""
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    pq = ivf.pq
    coarse = faiss.downcast_index(ivf.quantizer)
    c = faiss.rev_swig_ptr(coarse.get_xb(), ivf.d).copy()
    cent = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
    cent += c.reshape(pq.M, 1, pq.dsub)
    faiss.copy_array_to_vector(cent.ravel(), pq.centroids)
    coarse.reset()
    coarse.add(np.zeros((1, ivf.d), dtype=np.float32))


class ProductQuantizer(nn.Module):
    """Rotation and codes of a faiss `OPQ,IVF1,PQ` index (fixed) and its centroids (trainable)."""

    def __init__(self, index: faiss.Index, docids: list[str], corpus_fingerprint: str,
                 search: IndexConfig | None = None) -> None:
        super().__init__()
        self.cpu_index = index
        self.ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        if self.ivf.nlist != 1 or self.ivf.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("ProductQuantizer needs an inner-product IVF1,PQ index (see build_pq_index)")
        pq = self.ivf.pq
        self.M, self.ksub, self.dsub = int(pq.M), int(pq.ksub), int(pq.dsub)
        if index.ntotal != len(docids):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(docids)} docids were given")
        self.docids = list(docids)
        self.corpus_fingerprint = corpus_fingerprint
        # Plain tensors, not buffers: DDP would broadcast buffers at every step (codes are N x M)
        self.rotation = _rotation(index)  # (d, d) or None
        self.codes = torch.from_numpy(_codes(self.ivf))  # (N, M) int64
        cent = faiss.vector_to_array(pq.centroids).reshape(self.M, self.ksub, self.dsub)
        self.centroids = nn.Parameter(torch.from_numpy(cent.copy()))
        self.search_config = search or IndexConfig(factory="IVF1,PQ", device="cpu")
        self._search_index: DenseIndex | None = None

    @property
    def dim(self) -> int:
        return self.M * self.dsub

    def rotate(self, q: torch.Tensor) -> torch.Tensor:
        """(B, d) queries in the rotated (OPQ) space the PQ centroids live in."""
        if self.rotation is None:
            return q
        if self.rotation.device != q.device:
            self.rotation = self.rotation.to(q.device)
        return q @ self.rotation.T.to(q.dtype)

    def reconstruct(self, rows: torch.Tensor) -> torch.Tensor:
        """rows (...,) -> (..., d): each passage's M centroids concatenated (differentiable in the centroids)."""
        if self.codes.device != self.centroids.device:
            self.codes = self.codes.to(self.centroids.device)
        codes = self.codes[rows.to(self.codes.device)]  # (..., M)
        sub = torch.arange(self.M, device=codes.device)
        return self.centroids[sub, codes].reshape(*rows.shape, self.dim)

    def score(self, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Inner products of (B, d) unrotated queries with the reconstructions of rows (B, n) -> (B, n)."""
        recon = self.reconstruct(rows)  # (B, n, d)
        return torch.einsum("bd,bnd->bn", self.rotate(q), recon.to(q.dtype))

    def sync(self) -> faiss.Index:
        """Copy the current centroids into the faiss index (the CPU copy) and return it."""
        faiss.copy_array_to_vector(self.centroids.detach().float().cpu().numpy().ravel(), self.ivf.pq.centroids)
        self._search_index = None
        return self.cpu_index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows of the PQ index for (B, d) unrotated queries, with the current centroids."""
        if self._search_index is None:
            self.sync()
            on_cpu = self.search_config.device == "cpu" or gpu_count() == 0
            # searched in place on a CPU (no copy, no log line per step); a GPU copy is re-made each step
            self._search_index = (DenseIndex(self.cpu_index, self.search_config) if on_cpu
                                  else place_index(self.cpu_index, self.search_config))
        return self._search_index.search(queries, k)

    def invalidate(self) -> None:
        """The centroids changed (an optimizer step): the next search syncs them first."""
        self._search_index = None

    def export(self, directory: str | Path, name: str = "index.faiss") -> Path:
        """`index.faiss` (plain faiss), `index.docids` (row -> docid) and `index.json`, atomically each."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        write_index_atomic(self.sync(), path)
        stem = path.with_suffix("")
        atomic_write_text(stem.with_suffix(".docids"), "".join(f"{d}\n" for d in self.docids))
        meta = {"docids": stem.with_suffix(".docids").name, "corpus_fingerprint": self.corpus_fingerprint,
                "subvectors": self.M, "bits": int(self.ivf.pq.nbits), "opq": self.rotation is not None,
                "metric": "ip", "ntotal": len(self.docids), "bytes": index_bytes(self.cpu_index)}
        atomic_write_json(stem.with_suffix(".json"), meta)
        return path


def load_pq_index(path: str | Path) -> tuple[faiss.Index, list[str], str]:
    """An exported index with its docids and the fingerprint of the corpus it was built on."""
    path = Path(path)
    stem = path.with_suffix("")
    meta_path = stem.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        raise FileNotFoundError(f"{path} (and {meta_path.name} beside it) not found: export a jpq run first")
    meta = json.loads(meta_path.read_text())
    docids = (path.parent / meta["docids"]).read_text().splitlines()
    index = faiss.read_index(str(path))
    if index.ntotal != len(docids):
        raise ValueError(f"{path} holds {index.ntotal} vectors but {meta['docids']} lists {len(docids)} docids")
    return index, docids, meta["corpus_fingerprint"]


def index_bytes(index: faiss.Index) -> int:
    """Size of the serialized index (what `faiss.write_index` writes)."""
    return int(faiss.serialize_index(index).size)


def write_index_atomic(index: faiss.Index, path: Path) -> None:
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def _rotation(index: faiss.Index) -> torch.Tensor | None:
    if not isinstance(index, faiss.IndexPreTransform):
        return None
    if index.chain.size() != 1:
        raise ValueError("expected one OPQ rotation before the PQ index")
    vt = faiss.downcast_VectorTransform(index.chain.at(0))
    if not isinstance(vt, faiss.LinearTransform) or vt.have_bias:
        raise ValueError(f"expected an OPQ rotation (linear, no bias), got {type(vt).__name__}")
    a = faiss.vector_to_array(vt.A).reshape(vt.d_out, vt.d_in)
    return torch.from_numpy(a.copy())


def _codes(ivf: faiss.IndexIVF) -> np.ndarray:
    """(N, M) int64 codes of the one inverted list, in the order the vectors were added."""
    invlists = ivf.invlists
    n = invlists.list_size(0)
    raw = faiss.rev_swig_ptr(invlists.get_codes(0), n * invlists.code_size).reshape(n, invlists.code_size).copy()
    ids = faiss.rev_swig_ptr(invlists.get_ids(0), n).copy()
    if not np.array_equal(ids, np.arange(n)):
        raise ValueError("PQ index ids are not 0..N-1 in order")
    pq = ivf.pq
    if pq.nbits == 8:
        return raw.astype(np.int64)
    # faiss packs codes little-endian in a bit string: sub-vector m occupies bits m*nbits .. (m+1)*nbits-1
    bits = np.unpackbits(raw, axis=1, bitorder="little")[:, : pq.M * pq.nbits].reshape(n, pq.M, pq.nbits)
    return (bits.astype(np.int64) << np.arange(pq.nbits)).sum(-1)


def recode(index: faiss.Index, vectors: np.ndarray) -> faiss.Index:
    """An empty copy of `index` with `vectors` added: coded with its rotation and (trained) centroids."""
    coded = faiss.clone_index(index)
    coded.reset()
    coded.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return coded
