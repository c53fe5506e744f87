"""Training groups (a query, one positive, N negatives) and a deterministic batch schedule.

The schedule is a pure function of (seed, step): the global batch for step s is the s-th slice of a
per-epoch permutation seeded by (seed, epoch), and each group's positive and negatives are drawn from
a generator seeded by (seed, epoch, query index). So a resumed run sees exactly the batches an
uninterrupted one would, and every process can compute its own shard of the global batch.

Two options change what a batch holds (`sampler=ngame`, `sampler=curriculum`, `BatchingConfig`):
- Negative-aware batching (NGAME, Dahiya et al., WSDM 2023): the training queries are clustered (k-means on
  their embeddings) and each epoch walks the clusters in a seeded order, each cluster's queries shuffled,
  so consecutive queries, hence a batch's, share a topic and its in-batch negatives are hard. An epoch still
  visits every query once. The clusters can be replaced (`set_clusters`, after a miner refresh).
- A curriculum over negative difficulty: a query's negatives are drawn from a rank window of its ranked
  negative list that moves linearly with the step, e.g. from ranks [10, 30) at step 0 to [0, 10) at the
  last step (easy to hard).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dr.data.sources import RetrievalSet

logger = logging.getLogger(__name__)


@dataclass
class BatchingConfig:
    """`sampler=` of the contrastive objectives. `clusters`: NGAME batching with this many k-means clusters of
    the training queries; -1: one per global batch (queries // batch, NGAME's cluster size); 0: off.
    `cluster_model`: the encoder that embeds the queries for the first clustering (null: the model about to
    be trained). `refresh_clusters`: with a miner, re-cluster on the query embeddings of each refresh.
    `window_start` / `window_end`: [lo, hi) rank windows of each query's negative list at the first and the
    last step (null: the whole list)."""

    clusters: int = 0
    cluster_model: str | None = None
    refresh_clusters: bool = True
    window_start: list[int] | None = None
    window_end: list[int] | None = None

    def __post_init__(self) -> None:
        if self.clusters < -1:
            raise ValueError(f"sampler.clusters must be -1 (one per batch), 0 (off) or a count, got {self.clusters}")
        if (self.window_start is None) != (self.window_end is None):
            raise ValueError("sampler.window_start and sampler.window_end go together")
        for name, w in (("window_start", self.window_start), ("window_end", self.window_end)):
            if w is not None and not (len(w) == 2 and 0 <= w[0] < w[1]):
                raise ValueError(f"sampler.{name} must be [lo, hi) with 0 <= lo < hi, got {w}")

    def n_clusters(self, queries: int, global_batch: int) -> int:
        """The k for k-means: `clusters`, or queries // global_batch for -1 (at least 1, at most `queries`)."""
        k = max(1, queries // global_batch) if self.clusters == -1 else self.clusters
        return min(k, queries)


def curriculum_window(start: Sequence[int], end: Sequence[int], step: int, total: int) -> tuple[int, int]:
    """The [lo, hi) rank window at `step` of `total`: linear from `start` (step 0) to `end` (step total - 1),
    rounded to the nearest rank.

    >>> [curriculum_window((10, 30), (0, 10), s, 5) for s in range(5)]
    [(10, 30), (8, 25), (5, 20), (3, 15), (0, 10)]
    """
    f = min(1.0, step / (total - 1)) if total > 1 else 1.0
    lo = int(np.floor(start[0] + (end[0] - start[0]) * f + 0.5))
    hi = int(np.floor(start[1] + (end[1] - start[1]) * f + 0.5))
    return lo, max(hi, lo + 1)


def cluster_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of all rows, cluster by cluster: clusters in a random order, each cluster's rows shuffled.
    One sort, O(n log n), whatever the number of clusters (MS MARCO: 400K queries in 25K clusters).
    Here cluster 1 (rows 0, 2) came first, then cluster 2 (row 4), then cluster 0 (rows 1, 3):

    >>> cluster_order(np.array([1, 0, 1, 0, 2]), np.random.default_rng(0)).tolist()
    [0, 2, 4, 1, 3]
    """
    clusters, index = np.unique(labels, return_inverse=True)
    cluster_rank = rng.permutation(len(clusters))  # the position of each cluster in the walk
    return np.lexsort((rng.random(len(labels)), cluster_rank[index]))


@dataclass
class Group:
    qid: str
    query: str
    passage_ids: list[str]  # positive first, then negatives
    teacher: list[float] | None = None  # teacher scores of passage_ids (distillation), else None


def split_dev(train_set: RetrievalSet, dev_queries: int, seed: int) -> tuple[list[str], list[str]]:
    """(train qids, dev qids): `dev_queries` training queries held out (seeded) for model selection."""
    qids = sorted(train_set.queries)
    if dev_queries < 0 or dev_queries >= len(qids):
        raise ValueError(f"dev_queries must be in [0, {len(qids)}), got {dev_queries}")
    rng = np.random.default_rng([seed, 7])
    dev = set(rng.choice(len(qids), size=dev_queries, replace=False).tolist()) if dev_queries else set()
    return [q for i, q in enumerate(qids) if i not in dev], [q for i, q in enumerate(qids) if i in dev]


class GroupSchedule:
    """Global batches of training groups for any step, without state."""

    def __init__(
        self,
        train_set: RetrievalSet,
        qids: list[str],
        negatives: dict[str, list[str]] | None,
        negatives_per_query: int,
        global_batch: int,
        seed: int,
        mined: bool = False,
        clusters: np.ndarray | None = None,
        window: tuple[Sequence[int], Sequence[int]] | None = None,
        total_steps: int = 0,
        recluster_k: int = 0,
        spherical: bool = False,
    ) -> None:
        """`mined`: a miner supplies the negatives (`set_negatives`) before step 0. `clusters`: (len(qids),)
        cluster of each query for negative-aware batching (None: uniform shuffles). `window`: (start, end)
        rank windows of the negative lists, moving over `total_steps` steps (None: the whole list).
        `recluster_k` > 0: a miner re-clusters the queries into that many clusters at each refresh
        (dr.trainer.callbacks.MinerCallback; `spherical` k-means for cosine scores)."""
        if global_batch > len(qids):
            raise ValueError(f"global batch {global_batch} is larger than the {len(qids)} training queries")
        if negatives_per_query and not negatives and not mined:
            raise ValueError("negatives_per_query > 0 needs a negatives source (negatives=bm25, negatives=file "
                             "or a miner)")
        self.train_set = train_set
        self.qids = qids
        self.negatives = {}
        self.n_neg = negatives_per_query
        self.global_batch = global_batch
        self.seed = seed
        self.steps_per_epoch = len(qids) // global_batch  # the ragged tail of an epoch is dropped
        self.positives = {q: train_set.positives(q) for q in qids}
        self.clusters: np.ndarray | None = None
        self._order: tuple[tuple, np.ndarray] | None = None
        self._clusters_version = 0  # bumped by set_clusters: the cached epoch order is then stale
        if clusters is not None:
            self.set_clusters(clusters)
        self.window, self.total_steps = window, total_steps
        self.cluster_k, self.cluster_spherical = recluster_k, spherical
        self.refresh_clusters = recluster_k > 0
        if negatives:
            self.set_negatives(negatives)

    def set_clusters(self, clusters: np.ndarray | Sequence[int]) -> None:
        """Negative-aware batching from now on, with these clusters ((len(qids),) ints)."""
        clusters = np.asarray(clusters, dtype=np.int64)
        if clusters.shape != (len(self.qids),):
            raise ValueError(f"{clusters.shape[0]} cluster labels for {len(self.qids)} training queries")
        self.clusters = clusters
        self._clusters_version += 1

    def set_negatives(self, negatives: dict[str, list[str]]) -> None:
        """Swap the pool the groups draw negatives from (a miner refresh)."""
        self.negatives = negatives
        missing = [q for q in self.qids if self.n_neg and not negatives.get(q)]
        if missing:
            logger.warning("%d of %d training queries have no hard negative; they get random passages",
                           len(missing), len(self.qids))

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch within epoch) of global step `step` (0-based)."""
        return divmod(step, self.steps_per_epoch)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The order in which `epoch` visits the queries (the last epoch's is kept: a batch only slices it)."""
        key = (epoch, self._clusters_version)
        if self._order is None or self._order[0] != key:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.qids)) if self.clusters is None else cluster_order(self.clusters, rng)
            self._order = (key, order)
        return self._order[1]

    def batch(self, step: int) -> list[Group]:
        epoch, b = self.position(step)
        order = self.epoch_order(epoch)
        window = None if self.window is None else curriculum_window(*self.window, step, self.total_steps)
        return [self.group(int(i), epoch, window)
                for i in order[b * self.global_batch : (b + 1) * self.global_batch]]

    def group(self, index: int, epoch: int, window: tuple[int, int] | None = None) -> Group:
        """Query `index`'s group in `epoch`; negatives from ranks [lo, hi) of its list when `window` is given
        (the list's last `hi - lo` entries when it is shorter than `lo`)."""
        qid = self.qids[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        positives = self.positives[qid]
        passage_ids = [positives[rng.integers(len(positives))]]
        if self.n_neg:
            pool = self.negatives.get(qid) or []
            if pool and window is not None:
                lo, hi = window
                pool = pool[lo:hi] or pool[-(hi - lo):]
            if not pool:  # no mined negative for this query: random passages (counted in __init__)
                pool = self._random_pool(rng, qid)
            replace = len(pool) < self.n_neg
            passage_ids += [pool[i] for i in rng.choice(len(pool), size=self.n_neg, replace=replace)]
        return Group(qid, self.train_set.queries[qid], passage_ids)

    def _random_pool(self, rng: np.random.Generator, qid: str) -> list[str]:
        corpus = self.train_set.corpus
        rows = rng.choice(corpus.active_rows, size=min(64, len(corpus)), replace=False)
        positives = set(self.positives[qid])
        return [d for d in corpus.ids[rows].tolist() if d not in positives]
