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
from typing import ClassVar, Protocol

import numpy as np
import torch
from omegaconf import DictConfig

from dr.data.groups import Group
from dr.index import IndexConfig, build_index
from dr.losses.contrastive import metric_weighted_pairwise
from dr.models.dual_encoder import DualEncoder
from dr.objectives.base import Objective, ObjectiveConfig, Parts, check_positive, param_groups, shared_tower_check


@dataclass
class AdoreConfig(ObjectiveConfig):
    """`objective=adore`. `depth`: passages retrieved per query and step (paper: 200); `metric_cut`: the
    reciprocal-rank cutoff of the pair weights (MRR@cut; null: no cutoff); `index`: the fixed index
    (Flat: exact)."""

    name: ClassVar[str] = "adore"

    depth: int = 200
    metric_cut: int | None = 200
    index: IndexConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.index, dict):
            self.index = IndexConfig(**self.index)
        self.index = self.index or IndexConfig()
        check_positive(self, "depth", "metric_cut", nullable=("metric_cut",))

    def check(self, cfg: DictConfig) -> None:
        shared_tower_check(cfg, self.name, "trains the query tower only against a frozen passage index")

    def build(self, encoder: DualEncoder, parts: Parts) -> AdoreObjective:
        from dr.retrievers.dense import DenseRetriever

        corpus = parts.train_set.corpus
        emb = DenseRetriever(encoder, cache=parts.cache).corpus_matrix(corpus)  # sharded, then gathered
        candidates = FixedIndex(emb, self.index)
        return AdoreObjective(encoder, candidates, corpus.ids[corpus.active_rows].tolist(), parts.positives,
                              self.depth, self.metric_cut)


class Candidates(Protocol):
    """Where a query-tower objective finds each query's candidates and their training scores."""

    def retrieve(self, q: np.ndarray, depth: int) -> np.ndarray:
        """(B, H) query embeddings -> (B, depth) rows, best first (-1 padded)."""

    def scores(self, encoder: DualEncoder, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(1, H) query, (n,) rows -> (n,) training scores (divided by the temperature)."""

    def param_options(self) -> dict[int, dict]:
        """{id(parameter): optimizer group options} for the candidates' own trained parameters."""

    def eval_retriever(self, encoder: DualEncoder, dense, cache):
        """The retriever that evaluates the query tower with these candidates."""

    def export_files(self, directory) -> None:
        """Files written into the export beside the towers."""


class FixedIndex:
    """ADORE's candidates: a faiss index of frozen passage embeddings. Not an nn.Module: nothing in it
    trains, and DDP would broadcast a buffer of N x H at every step."""

    def __init__(self, passage_embeddings: np.ndarray, config: IndexConfig) -> None:
        self.passages = torch.from_numpy(np.array(passage_embeddings, dtype=np.float32))  # (N, H)
        self.index = build_index(np.asarray(passage_embeddings, dtype=np.float32), config)

    def retrieve(self, q: np.ndarray, depth: int) -> np.ndarray:
        return self.index.search(q, depth)[1]

    def scores(self, encoder: DualEncoder, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.passages.device != q.device:
            self.passages = self.passages.to(q.device)
        return encoder.score(q, self.passages[rows.to(q.device)].to(q.dtype))[0]

    def param_options(self) -> dict[int, dict]:
        return {}

    def eval_retriever(self, encoder: DualEncoder, dense, cache):
        return dense(encoder=encoder, cache=cache)

    def export_files(self, directory) -> None:
        pass


class AdoreObjective(Objective):
    """`forward(queries, positives)` -> (loss, logs): the query tower against the top-`depth` candidates
    it retrieves from `candidates` (ADORE: a fixed index; JPQ: the PQ index being trained). `docids`: the
    passage id of each candidate row; `positives` are turned into rows."""

    needs: ClassVar[frozenset[str]] = frozenset({"passage_embeddings"})

    def __init__(self, encoder: DualEncoder, candidates: Candidates, docids: Sequence[str],
                 positives: dict[str, list[str]], depth: int, metric_cut: int | None) -> None:
        super().__init__()
        if encoder.passage_model is encoder.query_model:
            raise ValueError("the query tower trains alone here (the passages are fixed): set model.shared=false")
        encoder.passage_model.requires_grad_(False)
        self.encoder = encoder
        self.candidates = candidates  # a submodule when it trains (JPQ's centroids)
        self.depth, self.metric_cut = depth, metric_cut
        row_of = {str(d): i for i, d in enumerate(docids)}
        missing = sorted({d for ds in positives.values() for d in ds if d not in row_of})
        if missing:
            raise ValueError(f"{len(missing)} positive passages are not in the index (e.g. {missing[:3]})")
        self.positive_rows = {q: [row_of[d] for d in ds] for q, ds in positives.items()}

    def batch(self, groups: Sequence[Group]) -> dict:
        return {"queries": [g.query for g in groups], "positives": [self.positive_rows[g.qid] for g in groups]}

    def forward(self, queries: Sequence[str], positives: Sequence[Sequence[int]]) -> tuple[torch.Tensor, dict]:
        q = self.encoder.embed("query", self.encoder.tokenize("query", queries))  # (B, H)
        with torch.no_grad():
            rows = self.candidates.retrieve(q.detach().float().cpu().numpy(), self.depth)
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
            scores = self.candidates.scores(self.encoder, q[i : i + 1], torch.as_tensor(cand))  # (n,)
            losses.append(metric_weighted_pairwise(scores, torch.as_tensor(labels, device=q.device),
                                                   self.metric_cut))
        loss = torch.stack(losses).mean()
        return loss, {"loss": float(loss.detach()), "train_rr@10": float(np.mean(rr))}

    def param_groups(self, weight_decay: float) -> list[dict]:
        return param_groups(self, weight_decay, self.candidates.param_options())

    def eval_retriever(self, dense, cache):
        return self.candidates.eval_retriever(self.encoder, dense, cache)

    def export_files(self, directory) -> None:
        self.candidates.export_files(directory)
