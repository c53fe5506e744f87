"""Balanced topic-aware sampling (TAS-Balanced; Hofstätter et al., SIGIR 2021, Sec. 3).

Topic-aware: the training queries are clustered once with k-means on their embeddings, and each batch
takes its queries from one randomly chosen cluster (uniform over clusters, whatever their size); a
cluster with fewer queries than the batch needs is taken whole and further random clusters fill the
batch, as in the authors' matchmaker loader. Balanced margins: each query's (positive, negative) pairs
are binned by teacher margin (score_pos - score_neg) into `bins` equal-width bins between that query's
smallest and largest margin; a pair is drawn from a uniformly chosen non-empty bin (paper Eq. 12, 10 bins).

Like `GroupSchedule`, a batch is a pure function of (seed, step), so resumed runs see the same batches.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numpy as np

from dr.data.groups import Group
from dr.data.sources import RetrievalSet
from dr.data.teacher import TeacherScores
from dr.data.teacher_table import TablePairs

logger = logging.getLogger(__name__)

PairSampling = Literal["balanced", "random", "hard_margin"]
_CACHED_QUERIES = 20_000  # queries whose pairs are kept built (a few batches' worth many times over)


@dataclass
class TasConfig:
    """`clusters`: k-means clusters of the training queries (paper: 2,000 for ~400K MS MARCO queries);
    0 samples queries uniformly (no topic awareness). `clusters_per_batch`: clusters a batch draws from
    (paper: 1). `cluster_model`: encoder that embeds the queries for clustering (null: the model about
    to be trained). `pair_sampling`: `balanced` (paper), `random` (uniform over a query's pairs) or
    `hard_margin` (uniform within the lowest-margin non-empty bin)."""

    clusters: int = 2000
    clusters_per_batch: int = 1
    cluster_model: str | None = None
    pair_sampling: PairSampling = "balanced"
    bins: int = 10

    def __post_init__(self) -> None:
        if self.clusters < 0 or self.clusters_per_batch < 1 or self.bins < 1:
            raise ValueError(f"sampler: need clusters >= 0, clusters_per_batch >= 1 and bins >= 1, got {self}")
        if self.pair_sampling not in ("balanced", "random", "hard_margin"):
            raise ValueError(f"sampler.pair_sampling must be balanced, random or hard_margin, "
                             f"got {self.pair_sampling!r}")


@dataclass
class QueryPairs:
    """One query's (positive, negative) pairs with teacher scores and margin bins."""

    pos: list[str]
    neg: list[str]
    pos_score: np.ndarray  # (P,)
    neg_score: np.ndarray  # (P,)
    bin: np.ndarray  # (P,) int, 0 = smallest margin


def query_pairs(qid: str, positives: list[str], teacher: TeacherScores, bins: int) -> QueryPairs | None:
    """The query's pairs: the file's explicit pairs, else every scored positive x every scored
    non-positive. None when no pair has both scores."""
    scored = teacher.scores.get(qid) or {}
    listed = teacher.pairs.get(qid)
    if listed:
        pairs = [(p, n) for p, n in listed if p in scored and n in scored]
    else:
        relevant = set(positives)
        pos = [p for p in positives if p in scored]
        pairs = [(p, n) for p in pos for n in scored if n not in relevant]
    if not pairs:
        return None
    pos_score = np.array([scored[p] for p, _ in pairs], dtype=np.float64)
    neg_score = np.array([scored[n] for _, n in pairs], dtype=np.float64)
    return QueryPairs([p for p, _ in pairs], [n for _, n in pairs], pos_score, neg_score,
                      margin_bins(pos_score - neg_score, bins))


def margin_bins(margins: np.ndarray, bins: int) -> np.ndarray:
    """(P,) margins -> (P,) bin in [0, bins): equal-width bins from the smallest to the largest margin."""
    lo, hi = float(margins.min()), float(margins.max())
    if hi <= lo:
        return np.zeros(len(margins), dtype=np.int64)
    return np.minimum(((margins - lo) / (hi - lo) * bins).astype(np.int64), bins - 1)


def draw_pairs(pairs: QueryPairs, n: int, strategy: PairSampling, rng: np.random.Generator) -> list[int]:
    """Indices of `n` pairs sharing one positive: the first pair by `strategy`, the rest by the same
    strategy among the pairs of that positive."""
    first = _draw(pairs.bin, strategy, rng)
    same_pos = np.flatnonzero(np.asarray(pairs.pos) == pairs.pos[first])
    rest = [int(same_pos[_draw(pairs.bin[same_pos], strategy, rng)]) for _ in range(n - 1)]
    return [first] + rest


def _draw(bins: np.ndarray, strategy: PairSampling, rng: np.random.Generator) -> int:
    if strategy == "random":
        return int(rng.integers(len(bins)))
    present = np.unique(bins)
    chosen = present[0] if strategy == "hard_margin" else present[rng.integers(len(present))]
    members = np.flatnonzero(bins == chosen)
    return int(members[rng.integers(len(members))])


def _check_passages(teacher: TeacherScores, qids: list[str], train_set: RetrievalSet) -> None:
    """Every passage the teacher scored for `qids` is in the training corpus (one vectorized lookup when
    the corpus is a `CorpusStore`: the MS MARCO teacher names millions of passages)."""
    pids = teacher.passages(qids)
    corpus = train_set.corpus
    present = corpus.contains(pids) if hasattr(corpus, "contains") else np.array([p in corpus for p in pids])
    if len(pids) and not present.all():
        pid = pids[int(np.argmin(present))]
        qid = next(q for q in qids if pid in (teacher.scores.get(q) or {}))
        raise ValueError(f"{teacher.source}: passage {pid!r} (query {qid!r}) is not in the corpus of {train_set.name}")


class TasSchedule:
    """Global batches of groups (query, positive, `negatives_per_query` negatives, teacher scores)."""

    def __init__(self, train_set: RetrievalSet, qids: list[str], teacher: TeacherScores, clusters: np.ndarray | None,
                 config: TasConfig, negatives_per_query: int, global_batch: int, seed: int) -> None:
        """`clusters`: (len(qids),) cluster of each query, or None for uniform query sampling."""
        self.train_set, self.config, self.seed = train_set, config, seed
        self.n_neg, self.global_batch = max(1, negatives_per_query), global_batch
        self.teacher = teacher
        # A query's pairs are rebuilt from the teacher when needed, and only the most recent are kept:
        # holding every query's pairs as Python objects would take several GB for MS MARCO's 40M pairs.
        self._pairs: OrderedDict[str, QueryPairs] = OrderedDict()
        self.qids = [q for q in qids if self._has_pairs(q)]
        _check_passages(teacher, self.qids, train_set)
        if len(self.qids) < len(qids):
            logger.warning("%d of %d training queries have no teacher-scored (positive, negative) pair in %s; "
                           "they are not sampled", len(qids) - len(self.qids), len(qids), teacher.source)
        if global_batch > len(self.qids):
            raise ValueError(f"global batch {global_batch} is larger than the {len(self.qids)} training queries "
                             f"with teacher pairs")
        labels = clusters if clusters is not None else np.zeros(len(qids), dtype=np.int64)
        by_cluster: dict[int, list[int]] = {}
        index = {q: i for i, q in enumerate(self.qids)}
        for qid, label in zip(qids, labels.tolist()):
            if qid in index:
                by_cluster.setdefault(int(label), []).append(index[qid])
        self.clusters = [np.array(v) for _, v in sorted(by_cluster.items())]
        self.topic_aware = clusters is not None
        logger.info("TAS schedule: %d queries, %d clusters, %s pairs", len(self.qids), len(self.clusters),
                    config.pair_sampling)

    def _has_pairs(self, qid: str) -> bool:
        if isinstance(self.teacher.pairs, TablePairs) and qid in self.teacher.pairs:
            return True  # a prepared table scores both passages of every pair it lists: no need to build them
        return self.pairs(qid) is not None

    def pairs(self, qid: str) -> QueryPairs | None:
        """The query's pairs (None when it has none), from a bounded cache."""
        if qid in self._pairs:
            self._pairs.move_to_end(qid)
            return self._pairs[qid]
        found = query_pairs(qid, self.train_set.positives(qid), self.teacher, self.config.bins)
        if found is not None:
            self._pairs[qid] = found
            if len(self._pairs) > _CACHED_QUERIES:
                self._pairs.popitem(last=False)
        return found

    def set_negatives(self, negatives: dict[str, list[str]]) -> None:
        raise ValueError("TAS draws its negatives from the teacher's scored pairs; a miner cannot replace them")

    def batch(self, step: int) -> list[Group]:
        rng = np.random.default_rng([self.seed, step])
        return [self.group(self.qids[i], rng) for i in self.batch_queries(rng)]

    def batch_queries(self, rng: np.random.Generator) -> list[int]:
        """Query indices of one batch: topic-aware (clusters) or uniform."""
        if not self.topic_aware:
            return rng.choice(len(self.qids), size=self.global_batch, replace=False).tolist()
        per_cluster = -(-self.global_batch // self.config.clusters_per_batch)
        chosen: list[int] = []
        while len(chosen) < self.global_batch:
            members = self.clusters[rng.integers(len(self.clusters))]
            members = members[~np.isin(members, chosen)]
            take = min(len(members), per_cluster, self.global_batch - len(chosen))
            chosen += rng.choice(members, size=take, replace=False).tolist()
        return chosen

    def group(self, qid: str, rng: np.random.Generator) -> Group:
        pairs = self.pairs(qid)
        picked = draw_pairs(pairs, self.n_neg, self.config.pair_sampling, rng)
        passage_ids = [pairs.pos[picked[0]]] + [pairs.neg[i] for i in picked]
        teacher = [float(pairs.pos_score[picked[0]])] + [float(pairs.neg_score[i]) for i in picked]
        return Group(qid, self.train_set.queries[qid], passage_ids, teacher)
