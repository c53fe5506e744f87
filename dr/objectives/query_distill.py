"""`objective=query_distill`: a (smaller) query tower distilled from a teacher model against the teacher's
fixed passage index (query-side distillation, as ScalingNote, 2024, serves a small query tower beside a
large model's passage index).

The passage tower is the teacher's and stays frozen, so the corpus embeddings (and the index) are the
teacher's, encoded once and taken from the cache. The query tower starts as the teacher's and is cut to its
first `student_layers` layers (dr.models.layers). Before the cut, the teacher's query embeddings of every
training query are computed, and the teacher's top `depth` passages of each. A step encodes the batch's
queries with the student and minimizes `dr.losses.distill.query_distill_loss`: the squared distance to the
teacher's embedding (mse_weight) plus the KL divergence between the teacher's and the student's score
distributions over the teacher's top `depth` (rank_weight). No relevance labels are used: any query log
would do, so `extra_queries` (a `qid<TAB>text` file, e.g. MS MARCO questions) adds `extra_per_step` of its
queries to every batch, drawn as a pure function of (seed, the batch's query ids), so resume stays exact.
The export holds the student as `query/` and the teacher's passage tower as `passage/`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from omegaconf import DictConfig

from dr.data.errors import ReadPolicy
from dr.data.groups import Group
from dr.data.msmarco import read_queries_tsv
from dr.index import IndexConfig, build_index
from dr.losses.distill import query_distill_loss
from dr.models.dual_encoder import DualEncoder
from dr.models.layers import keep_first_layers
from dr.objectives.base import (Objective, ObjectiveConfig, Parts, batch_draw, check_positive,
                                shared_tower_check)


@dataclass
class QueryDistillConfig(ObjectiveConfig):
    """`student_layers`: layers kept in the query tower (null: all; the student is then the teacher's size);
    `depth`: the teacher's top passages per query in the ranking term; `temperature`: of both score
    distributions (null: the model's); `index`: the teacher's passage index (Flat: exact)."""

    name: ClassVar[str] = "query_distill"

    student_layers: int | None = 3
    depth: int = 100
    mse_weight: float = 1.0
    rank_weight: float = 1.0
    temperature: float | None = None
    extra_queries: str | None = None
    extra_per_step: int = 32
    index: IndexConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.index, dict):
            self.index = IndexConfig(**self.index)
        self.index = self.index or IndexConfig()
        check_positive(self, "student_layers", "depth", "temperature", "extra_per_step",
                       nullable=("student_layers", "temperature"))
        if self.mse_weight < 0 or self.rank_weight < 0 or not (self.mse_weight or self.rank_weight):
            raise ValueError("objective.mse_weight and rank_weight must be >= 0, not both 0")

    def check(self, cfg: DictConfig) -> None:
        shared_tower_check(cfg, self.name, "trains a query tower of its own against the teacher's passage tower")

    def build(self, encoder: DualEncoder, parts: Parts) -> QueryDistillObjective:
        from dr.retrievers.dense import DenseRetriever

        corpus, qids = parts.train_set.corpus, list(parts.train_qids)
        texts = [parts.train_set.queries[q] for q in qids]
        extra = []
        if self.extra_queries:  # `qid<TAB>text` rows; a bad row raises naming file and line
            extra = list(read_queries_tsv(self.extra_queries, ReadPolicy(strict=True)).values())
        passages = DenseRetriever(encoder, cache=parts.cache).corpus_matrix(corpus)  # the teacher's, frozen
        teacher = encoder.encode_queries(texts + extra, desc="teacher queries")
        depth = min(self.depth, len(passages))  # an exact index then fills every row
        top = build_index(np.asarray(passages, np.float32), self.index).search(teacher, depth)[1]
        if self.student_layers is not None:
            keep_first_layers(encoder.query_model, self.student_layers)
        temperature = self.temperature or encoder.config.temperature
        return QueryDistillObjective(encoder, passages, dict(zip(qids, range(len(qids)))), teacher, top,
                                     temperature, self.mse_weight, self.rank_weight, extra,
                                     self.extra_per_step, parts.trainer.seed)


class QueryDistillObjective(Objective):
    """`forward(queries, rows)` -> (loss, logs) for a batch of training queries (`rows`: their positions in
    the teacher tables)."""

    needs: ClassVar[frozenset[str]] = frozenset({"passage_embeddings"})

    def __init__(self, encoder: DualEncoder, passages: np.ndarray, row_of: dict[str, int], teacher: np.ndarray,
                 top: np.ndarray, temperature: float, mse_weight: float, rank_weight: float,
                 extra: Sequence[str] = (), extra_per_step: int = 0, seed: int = 0) -> None:
        """`teacher` and `top` hold the training queries' rows (`row_of`) followed by the `extra` queries'."""
        super().__init__()
        if encoder.passage_model is encoder.query_model:
            raise ValueError("the query tower trains alone here (the passages are the teacher's): set "
                             "model.shared=false")
        encoder.passage_model.requires_grad_(False)
        self.encoder = encoder
        # plain tensors, not buffers: fixed tables, not part of the trained state (DDP would broadcast them)
        self.passages = torch.from_numpy(np.ascontiguousarray(passages, np.float32))  # (N, H)
        self.teacher = torch.from_numpy(np.ascontiguousarray(teacher, np.float32))  # (Q, H)
        self.top = torch.from_numpy(np.asarray(top, np.int64))  # (Q, depth), -1 padded
        self.row_of = row_of
        self.temperature, self.mse_weight, self.rank_weight = temperature, mse_weight, rank_weight
        self.extra, self.extra_per_step, self.seed = list(extra), extra_per_step, seed
        self.extra_start = len(row_of)

    def batch(self, groups: Sequence[Group]) -> dict:
        queries, rows = [g.query for g in groups], [self.row_of[g.qid] for g in groups]
        if self.extra:
            take = batch_draw(groups, len(self.extra), self.extra_per_step, self.seed, stream=2)
            queries += [self.extra[i] for i in take]
            rows += [self.extra_start + i for i in take]
        return {"queries": queries, "rows": rows}

    def forward(self, queries: Sequence[str], rows: Sequence[int]) -> tuple[torch.Tensor, dict]:
        q = self.encoder.embed("query", self.encoder.tokenize("query", queries))  # (B, H) the student's
        idx = torch.as_tensor(list(rows))
        top = self.top[idx].clamp(min=0)  # -1 (an approximate index short of results) -> row 0, repeated
        teacher = self.teacher[idx].to(q.device, q.dtype)
        passages = self.passages[top].to(q.device, q.dtype)  # (B, depth, H)
        loss, mse, kl = query_distill_loss(q, teacher, passages, self.temperature, self.mse_weight,
                                           self.rank_weight)
        return loss, {"loss": float(loss.detach()), "train_mse": float(mse.detach()), "train_kl": float(kl.detach())}
