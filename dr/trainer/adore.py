"""ADORE (Zhan et al., SIGIR 2021): train the query encoder against a fixed passage index.

The passage encoder and its index are frozen (built once from a given checkpoint, e.g. a STAR export).
At every step each training query is encoded with the current query encoder, its top-`depth` passages
are retrieved from the fixed index (its real, current ranking), and the query encoder is updated with
the metric-weighted pairwise loss over (relevant, retrieved irrelevant) pairs. Relevant passages that
were not retrieved are appended after the top-`depth`, as in the authors' code.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dr.data.groups import Group
from dr.index import IndexConfig, build_index
from dr.losses.contrastive import metric_weighted_pairwise
from dr.models.dual_encoder import DualEncoder


@dataclass
class AdoreConfig:
    """`depth`: passages retrieved per query and step (paper: 200); `metric_cut`: the reciprocal-rank
    cutoff of the pair weights (MRR@cut; null: no cutoff); `index`: the fixed index (Flat: exact)."""

    depth: int = 200
    metric_cut: int | None = 200
    index: IndexConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.index, dict):
            self.index = IndexConfig(**self.index)
        self.index = self.index or IndexConfig()
        if self.depth <= 0:
            raise ValueError(f"objective.depth must be > 0, got {self.depth}")
        if self.metric_cut is not None and self.metric_cut <= 0:
            raise ValueError(f"objective.metric_cut must be > 0 or null, got {self.metric_cut}")


class AdoreObjective(nn.Module):
    """`forward(queries, positives)` -> (loss, logs); `positives` are rows of `passage_embeddings`."""

    def __init__(self, encoder: DualEncoder, config: AdoreConfig, passage_embeddings: np.ndarray,
                 docids: np.ndarray, positives: dict[str, list[str]]) -> None:
        super().__init__()
        if encoder.passage_model is encoder.query_model:
            raise ValueError("ADORE trains the query tower only: set model.shared=false")
        encoder.passage_model.requires_grad_(False)
        self.encoder = encoder
        self.config = config
        # (N, H) frozen. A plain attribute, not a buffer: DDP would broadcast a buffer at every step
        self.passages = torch.from_numpy(np.array(passage_embeddings, dtype=np.float32))
        self.index = build_index(np.asarray(passage_embeddings, dtype=np.float32), config.index)
        row_of = {str(d): i for i, d in enumerate(docids.tolist())}
        self.positive_rows = {q: [row_of[d] for d in ds] for q, ds in positives.items()}

    def inputs(self, groups: Sequence[Group]) -> dict:
        return {"queries": [g.query for g in groups], "positives": [self.positive_rows[g.qid] for g in groups]}

    def forward(self, queries: Sequence[str], positives: Sequence[Sequence[int]]) -> tuple[torch.Tensor, dict]:
        q = self.encoder.embed("query", self.encoder.tokenize("query", queries))  # (B, H)
        with torch.no_grad():
            rows = self.retrieve(q.detach().float().cpu().numpy())
        losses, rr = [], []
        for i, pos in enumerate(positives):
            cand = rows[i][rows[i] >= 0]
            labels = np.isin(cand, pos)
            hits = np.flatnonzero(labels[:10])
            rr.append(1.0 / (1 + hits[0]) if len(hits) else 0.0)
            retrieved = set(cand.tolist())
            missing = [p for p in pos if p not in retrieved]
            if missing:  # relevant passages outside the top-depth go last
                cand = np.concatenate([cand, np.asarray(missing, dtype=cand.dtype)])
                labels = np.concatenate([labels, np.ones(len(missing), dtype=bool)])
            scores = self.candidate_scores(q[i : i + 1], torch.as_tensor(cand))  # (n,)
            losses.append(metric_weighted_pairwise(scores, torch.as_tensor(labels, device=q.device),
                                                   self.config.metric_cut))
        loss = torch.stack(losses).mean()
        return loss, {"loss": float(loss.detach()), "train_rr@10": float(np.mean(rr))}

    def retrieve(self, q: np.ndarray) -> np.ndarray:
        """(B, H) query embeddings -> (B, depth) rows of the fixed index, best first (-1 padded)."""
        return self.index.search(q, self.config.depth)[1]

    def candidate_scores(self, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(1, H) query, (n,) passage rows -> (n,) training scores (divided by the temperature)."""
        if self.passages.device != q.device:
            self.passages = self.passages.to(q.device)
        return self.encoder.score(q, self.passages[rows.to(q.device)].to(q.dtype))[0]
