"""Training groups (a query, one positive, N negatives) and a deterministic batch schedule.

The schedule is a pure function of (seed, step): the global batch for step s is the s-th slice of a
per-epoch permutation seeded by (seed, epoch), and each group's positive and negatives are drawn from
a generator seeded by (seed, epoch, query index). So a resumed run sees exactly the batches an
uninterrupted one would, and every process can compute its own shard of the global batch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from dr.data.sources import RetrievalSet

logger = logging.getLogger(__name__)


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
    ) -> None:
        """`mined`: a miner supplies the negatives (`set_negatives`) before step 0."""
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
        if negatives:
            self.set_negatives(negatives)

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

    def batch(self, step: int) -> list[Group]:
        epoch, b = self.position(step)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.qids))
        return [self.group(int(i), epoch) for i in order[b * self.global_batch : (b + 1) * self.global_batch]]

    def group(self, index: int, epoch: int) -> Group:
        qid = self.qids[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        positives = self.positives[qid]
        passage_ids = [positives[rng.integers(len(positives))]]
        if self.n_neg:
            pool = self.negatives.get(qid) or []
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
