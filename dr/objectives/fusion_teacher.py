"""`teacher=fusion`: a teacher made of score sources, BM25 and a dense model, fused per query.

TAS-B's teacher is an ensemble; here the strongest one that can be built offline is lexical + dense. Each
source scores every (training query, passage) pair: BM25 from its term statistics (bm25s `get_scores`),
the dense model as query x corpus embeddings (the corpus from the embedding cache). Per query and source the
scores are normalized with statistics of that source's own top `k` (z-score: mean and sd of the top k;
min-max: their min and max; rrf: 1 / (rrf_k + rank) over the whole corpus), then

    teacher(q, p) = scale * sum_s weight_s * normalized_s(q, p)

`scale` puts the fused margins on the student's score scale (a cosine student's margins are about 0.1 of a
z-score's). The TAS sampler draws pairs from each query's candidates (the union of the sources' top k, plus
its positives); the in-batch teacher asks `score(qid, pid)` for any pair, so no live cross-encoder is needed.
The (queries x corpus) matrices are held in memory: fine for SciFact (809 x 5,183), refused above
`max_pairs`; MS MARCO-size teachers come as score files (`python -m dr.score`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from dr.data.sources import RetrievalSet
from dr.data.teacher import TeacherScores
from dr.encoding.sharded import corpus_matrix
from dr.models.dual_encoder import DualEncoder
from dr.objectives.base import Parts
from dr.objectives.distill import DistillConfig
from dr.retrievers.bm25 import BM25Retriever
from dr.retrievers.fusion import FUSIONS

logger = logging.getLogger(__name__)

__all__ = ["FusionScores", "FusionTeacherConfig", "normalize_rows"]


def normalize_rows(scores: np.ndarray, method: str, k: int, rrf_k: int = 60) -> np.ndarray:
    """(Q, N) scores -> (Q, N) normalized per row with the statistics of the row's top k (see module doc).

    >>> normalize_rows(np.array([[3.0, 1.0, 2.0, 0.0]]), "zscore", k=3)  # top 3: 3, 2, 1 -> mean 2, sd 0.8165
    array([[ 1.2247, -1.2247,  0.    , -2.4495]])
    """
    if method not in FUSIONS:
        raise ValueError(f"teacher.normalize must be one of {', '.join(FUSIONS)}, got {method!r}")
    scores = np.asarray(scores, dtype=np.float64)
    k = min(k, scores.shape[1])
    if method == "rrf":
        order = np.argsort(-scores, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1)[None].repeat(len(scores), 0), axis=1)
        return 1.0 / (rrf_k + ranks)
    top = -np.partition(-scores, k - 1, axis=1)[:, :k]  # each row's k highest, unordered
    if method == "minmax":
        low, high = top.min(1, keepdims=True), top.max(1, keepdims=True)
        span = np.where(high > low, high - low, 1.0)
        return np.where(high > low, (scores - low) / span, 0.0)
    mean, sd = top.mean(1, keepdims=True), top.std(1, keepdims=True)
    return np.where(sd > 0, (scores - mean) / np.where(sd > 0, sd, 1.0), 0.0)


@dataclass
class FusionScores(TeacherScores):
    """Teacher scores for every (training query, passage) pair from a fused (Q, N) matrix; `scores` holds each
    query's candidates (for the pair sampler), `score` answers any pair (for the in-batch teacher)."""

    matrix: np.ndarray = field(default=None, repr=False)  # (Q, N) float32
    query_row: dict[str, int] = field(default_factory=dict, repr=False)
    passage_col: dict[str, int] = field(default_factory=dict, repr=False)

    def score(self, qid: str, pid: str) -> float | None:
        row, col = self.query_row.get(qid), self.passage_col.get(pid)
        return None if row is None or col is None else float(self.matrix[row, col])


@dataclass
class FusionTeacherConfig(DistillConfig):
    """`teacher=fusion` (see the module doc). `sources`: bm25 and/or dense, with one weight each;
    `dense_model`: the dense source's model (null: the model about to be trained, before training);
    `normalize`: zscore | minmax | rrf over each source's top `k`; `scale`: multiplies the fused score."""

    scores: str = "fusion"  # no file: the scores are computed
    sources: list[str] = field(default_factory=lambda: ["bm25", "dense"])
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    normalize: Literal["zscore", "minmax", "rrf"] = "zscore"
    k: int = 100
    rrf_k: int = 60
    scale: float = 1.0
    dense_model: str | None = None
    max_pairs: int = 200_000_000
    bm25: BM25Retriever = field(default_factory=BM25Retriever)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.sources or set(self.sources) - {"bm25", "dense"} or len(set(self.sources)) != len(self.sources):
            raise ValueError(f"teacher.sources: bm25 and/or dense, each once, got {self.sources}")
        if len(self.weights) != len(self.sources):
            raise ValueError(f"teacher.weights: one per source ({self.sources}), got {self.weights}")
        if self.normalize not in FUSIONS:
            raise ValueError(f"teacher.normalize must be one of {', '.join(FUSIONS)}, got {self.normalize!r}")
        if self.k <= 0 or self.scale <= 0:
            raise ValueError("teacher.k and teacher.scale must be > 0")
        if self.inbatch_model:
            raise ValueError("teacher=fusion scores in-batch pairs itself: leave teacher.inbatch_model null")

    def teacher_scores(self, encoder: DualEncoder, parts: Parts, passages: np.ndarray | None = None) -> FusionScores:
        return self.fused(encoder, parts.train_set, parts.train_qids, parts.cache, passages)

    def fused(self, encoder: DualEncoder, scored_set: RetrievalSet, qids: list[str], cache=None,
              passages: np.ndarray | None = None) -> FusionScores:
        """The fused teacher over `qids` of `scored_set` and its whole corpus (also `python -m dr.score
        teacher=fusion`). `passages`: `encoder`'s corpus embeddings when the caller already holds them."""
        qids, corpus = list(qids), scored_set.corpus
        if len(qids) * len(corpus) > self.max_pairs:
            raise ValueError(f"teacher=fusion holds (queries x passages) = {len(qids)} x {len(corpus)} scores, over "
                             f"teacher.max_pairs={self.max_pairs}: write a score file over candidates with "
                             "`python -m dr.score` and use it as teacher.scores")
        texts = [scored_set.queries[q] for q in qids]
        fused = np.zeros((len(qids), len(corpus)), np.float64)
        candidates = np.zeros((len(qids), len(corpus)), bool)
        for source, weight in zip(self.sources, self.weights):
            if source == "bm25":
                raw = self.bm25.score_matrix(corpus, texts)
            else:
                raw = self._dense(encoder, corpus, texts, cache, passages)
            fused += weight * normalize_rows(raw, self.normalize, self.k, self.rrf_k)
            k = min(self.k, raw.shape[1])
            np.put_along_axis(candidates, np.argpartition(-raw, k - 1, axis=1)[:, :k], True, axis=1)
        matrix = (self.scale * fused).astype(np.float32)
        pids = corpus.ids[corpus.active_rows]
        col = {str(p): j for j, p in enumerate(pids)}
        scores = {}
        for i, qid in enumerate(qids):
            cols = set(np.flatnonzero(candidates[i]).tolist())
            cols |= {col[p] for p in scored_set.positives(qid) if p in col}
            scores[qid] = {str(pids[j]): float(matrix[i, j]) for j in sorted(cols)}
        source = (f"fusion({', '.join(f'{w:g} x {s}' for s, w in zip(self.sources, self.weights))}; "
                  f"{self.normalize} over top {self.k}; scale {self.scale:g})")
        logger.info("teacher %s over %d queries x %d passages", source, len(qids), len(corpus))
        return FusionScores(scores, {}, source, matrix, {q: i for i, q in enumerate(qids)}, col)

    def _dense(self, encoder: DualEncoder, corpus, texts: list[str], cache, passages: np.ndarray | None) -> np.ndarray:
        if self.dense_model:  # another model: the caller's embeddings are not its
            encoder, passages = DualEncoder(encoder.config.with_weights(self.dense_model)), None
        if passages is None:
            passages = corpus_matrix(encoder, corpus, cache)
        return encoder.encode_queries(texts, desc="teacher queries") @ passages.T


def pair_teacher(encoder_config, cache=None, **settings):
    """The fusion teacher as a pair scorer for the miner's false-negative filters (`miner.fn_teacher=fusion`):
    (training set, query id, passage ids) -> fused scores. Its dense source is the starting checkpoint
    (`encoder_config.name_or_path`, loaded apart from the model in training, so a resumed run's teacher is the
    same), built at the first call over all of the set's queries and the corpus; `settings` are
    FusionTeacherConfig's (default: BM25 + dense, equal weights, z-scores over each source's top 100)."""
    config = FusionTeacherConfig(**settings)
    built: dict[int, FusionScores] = {}

    def score(train_set: RetrievalSet, qid: str, pids) -> list[float]:
        key = id(train_set)
        if key not in built:
            encoder = DualEncoder(encoder_config.with_weights(encoder_config.name_or_path))
            encoder.eval().requires_grad_(False)
            built[key] = config.fused(encoder, train_set, sorted(train_set.queries), cache)
        fused = built[key]
        return [float("-inf") if (s := fused.score(qid, p)) is None else s for p in pids]

    return score
