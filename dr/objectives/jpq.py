"""JPQ (Zhan et al., CIKM 2021): the query encoder and the PQ centroids trained jointly.

The passage codes (and the OPQ rotation) stay fixed. At every step each training query is encoded, its
top-`depth` passages are retrieved from the PQ index with the current centroids (end-to-end negative
sampling), and the query encoder and the centroids are updated with ADORE's metric-weighted pairwise
loss over the inner products of the query with the passages' PQ reconstructions (the authors' code:
pairwise logistic loss weighted by the change in reciprocal rank, MRR@200 for passages). Relevant
passages that were not retrieved are appended after the top-`depth`, as in their code.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from dr.dist import local_only
from dr.index import IndexConfig
from dr.index.pq import ProductQuantizer, build_pq_index, load_pq_index, pq_factory
from dr.models.dual_encoder import DualEncoder
from dr.objectives.adore import AdoreObjective
from dr.objectives.base import ObjectiveConfig, Parts, shared_tower_check

logger = logging.getLogger(__name__)


@dataclass
class QuantizerConfig:
    """JPQ's compressed index and how it is trained (`quantizer=jpq`).

    `subvectors` (M) x `bits` per passage: M bytes at 8 bits (256 centroids per sub-vector). `opq`: learn a
    rotation first (OPQ). `depth`: passages retrieved from the PQ index per query and step (the loss's
    candidates; paper 200). `metric_cut`: reciprocal ranks past it count 0 (paper: 200 for passages).
    `centroid_lr`: the centroids' own learning rate (paper: 1e-4 for M = 48/64/96, 2e-5 for M = 32, 5e-6
    for M = 16/24). `init_from`: a faiss index file to start from instead of training OPQ + PQ here.
    """

    subvectors: int = 48
    bits: int = 8
    opq: bool = True
    opq_iterations: int = 50  # OPQ's alternating optimization (faiss default 50)
    train_size: int = 262_144
    seed: int = 0
    depth: int = 200
    metric_cut: int | None = 200
    centroid_lr: float = 1.0e-4
    centroid_weight_decay: float = 0.0
    device: str = "auto"  # search device for the index during training (auto: GPU when faiss has one)
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.subvectors <= 0 or not 1 <= self.bits <= 16:
            raise ValueError(f"quantizer: need subvectors > 0 and 1 <= bits <= 16, got {self.subvectors}, {self.bits}")
        if self.depth <= 0 or self.opq_iterations <= 0:
            raise ValueError(f"quantizer.depth and opq_iterations must be > 0, got {self.depth}, {self.opq_iterations}")
        if self.metric_cut is not None and self.metric_cut <= 0:
            raise ValueError(f"quantizer.metric_cut must be > 0 or null, got {self.metric_cut}")

    def factory(self) -> str:
        return pq_factory(self.subvectors, self.bits, self.opq)


class PQCandidates(nn.Module):
    """JPQ's candidates: the PQ index with trainable centroids (a submodule, so they train and are saved)."""

    def __init__(self, quantizer: ProductQuantizer, config: QuantizerConfig) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.config = config

    def retrieve(self, q: np.ndarray, depth: int) -> np.ndarray:
        self.quantizer.invalidate()  # the centroids moved at the last optimizer step
        return self.quantizer.search(q, depth)[1]

    def scores(self, encoder: DualEncoder, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.quantizer.score(q, rows[None])[0] / encoder.config.temperature

    def param_options(self) -> dict[int, dict]:
        return {id(self.quantizer.centroids): {"lr": self.config.centroid_lr,
                                               "weight_decay": self.config.centroid_weight_decay}}

    def eval_retriever(self, encoder: DualEncoder, dense, cache):
        from dr.retrievers.pq import PQRetriever

        return PQRetriever(encoder, quantizer=self.quantizer, cache=cache)

    def export_files(self, directory) -> None:
        """The trained PQ index beside the exported towers: index.faiss, index.docids, index.json."""
        self.quantizer.export(directory)


@dataclass
class JPQConfig(ObjectiveConfig):
    """`objective=jpq`: ADORE's loop (dr.objectives.adore) over the PQ index of `quantizer=`, whose
    centroids train with the query tower."""

    name: ClassVar[str] = "jpq"
    uses: ClassVar[frozenset[str]] = frozenset({"quantizer"})
    requires: ClassVar[dict[str, str]] = {"quantizer": "the PQ index to train, e.g. quantizer=jpq"}

    def check(self, cfg: DictConfig) -> None:
        shared_tower_check(cfg, self.name, "trains the query tower only (passage codes are fixed)")

    def build(self, encoder: DualEncoder, parts: Parts) -> AdoreObjective:
        """OPQ + PQ trained once on the starting passage tower's embeddings of the training corpus (or read
        from `quantizer.init_from`), written to RUN/pq-init/ (the plain OPQ+PQ baseline; a resumed run
        reuses it, so codes and rotation never change within a run)."""
        from dr.retrievers.dense import DenseRetriever

        qcfg: QuantizerConfig = instantiate(parts.cfg.quantizer, _convert_="all")
        corpus = parts.train_set.corpus
        init = Path(qcfg.init_from) if qcfg.init_from else parts.out_dir / "pq-init" / "index.faiss"
        with parts.accelerator.main_process_first():  # the main process builds and writes it; the others read it
            if not init.exists():
                if qcfg.init_from:
                    raise FileNotFoundError(f"quantizer.init_from={qcfg.init_from} does not exist")
                with local_only():  # the others wait at main_process_first's barrier: no collective here
                    emb = DenseRetriever(encoder, cache=parts.cache).corpus_matrix(corpus)
                start = time.perf_counter()
                index = build_pq_index(emb, qcfg)
                logger.info("OPQ + PQ (%s) over %d passages trained in %.1fs", qcfg.factory(), len(emb),
                            time.perf_counter() - start)
                ProductQuantizer(index, corpus.ids[corpus.active_rows].tolist(),
                                 corpus.fingerprint).export(init.parent, init.name)
            index, docids, fingerprint = load_pq_index(init)
        if fingerprint != corpus.fingerprint:
            raise ValueError(f"{init} was built on another corpus than {parts.train_set.name}'s")
        quantizer = ProductQuantizer(index, docids, fingerprint, IndexConfig(factory="IVF1,PQ", device=qcfg.device))
        if quantizer.dim != encoder.dim:
            raise ValueError(f"the PQ index has {quantizer.dim} dimensions, the encoder {encoder.dim}")
        return AdoreObjective(encoder, PQCandidates(quantizer, qcfg), docids, parts.positives, qcfg.depth,
                              qcfg.metric_cut)
