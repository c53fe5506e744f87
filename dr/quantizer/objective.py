"""JPQ (Zhan et al., CIKM 2021): the query encoder and the PQ centroids trained jointly.

The passage codes (and the OPQ rotation) stay fixed. At every step each training query is encoded, its
top-`depth` passages are retrieved from the PQ index with the current centroids (end-to-end negative
sampling), and the query encoder and the centroids are updated with ADORE's metric-weighted pairwise
loss over the inner products of the query with the passages' PQ reconstructions (the authors' code:
pairwise logistic loss weighted by the change in reciprocal rank, MRR@200 for passages). Relevant
passages that were not retrieved are appended after the top-`depth`, as in their code.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dr.models.dual_encoder import DualEncoder
from dr.quantizer.pq import ProductQuantizer, QuantizerConfig
from dr.trainer.adore import AdoreObjective


class JPQObjective(AdoreObjective):
    """ADORE's loop over a trainable PQ index instead of a fixed flat one."""

    def __init__(self, encoder: DualEncoder, config: QuantizerConfig, quantizer: ProductQuantizer,
                 positives: dict[str, list[str]]) -> None:
        nn.Module.__init__(self)
        if encoder.passage_model is encoder.query_model:
            raise ValueError("JPQ trains the query tower only (passage codes are fixed): set model.shared=false")
        if quantizer.dim != encoder.dim:
            raise ValueError(f"the PQ index has {quantizer.dim} dimensions, the encoder {encoder.dim}")
        encoder.passage_model.requires_grad_(False)
        self.encoder = encoder
        self.config = config
        self.quantizer = quantizer
        row_of = {d: i for i, d in enumerate(quantizer.docids)}
        missing = sorted({d for ds in positives.values() for d in ds if d not in row_of})
        if missing:
            raise ValueError(f"{len(missing)} positive passages are not in the PQ index (e.g. {missing[:3]})")
        self.positive_rows = {q: [row_of[d] for d in ds] for q, ds in positives.items()}

    def retrieve(self, q: np.ndarray) -> np.ndarray:
        self.quantizer.invalidate()  # the centroids moved at the last optimizer step
        return self.quantizer.search(q, self.config.depth)[1]

    def candidate_scores(self, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.quantizer.score(q, rows[None])[0] / self.encoder.config.temperature

    def export_files(self, directory) -> None:
        """The trained PQ index beside the exported towers: index.faiss, index.docids, index.json."""
        self.quantizer.export(directory)
