"""Dynamic hard-negative mining over a periodically rebuilt FAISS index (ANCE; STAR's static negatives).

A refresh encodes the corpus with the current passage encoder, indexes it, searches the training
queries and turns the ranking into negatives with `select_negatives`. It runs on the same sharded path
as evaluation (`dr.encoding.sharded`): under `torch.distributed` each process encodes and indexes only
its shard of the corpus and searches all training queries against it; the per-shard top-k lists are
gathered and merged into one top-k. So no process holds the corpus embeddings twice, memory grows
linearly with the corpus, and no queries-by-corpus score matrix is ever built (faiss returns the top-k
only). Every process ends with the same negatives, equal to one process's.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from dr.data.runs import ArrayRun
from dr.data.sources import RetrievalSet
from dr.dist import all_gather_object, world
from dr.encoding.cache import EmbeddingCache, ShardEmbeddings
from dr.encoding.sharded import EncodeStats, encode_corpus, encode_texts, search
from dr.index import IndexConfig
from dr.mining.filters import denoise_weights, filter_candidates
from dr.mining.select import select_negatives
from dr.models.dual_encoder import DualEncoder
from dr.types import Run

logger = logging.getLogger(__name__)

# (training set, query id, passage ids) -> a teacher's relevance scores of those pairs (a cross-encoder's
# logits, or the fusion teacher's fused scores); used by the false-negative filters and denoising.
TeacherFn = Callable[[RetrievalSet, str, Sequence[str]], Sequence[float]]


@dataclass
class MinerConfig:
    """When and how negatives are mined.

    `refresh_every`: steps between refreshes (refresh before step 0, N, 2N, ...); 0 mines once before
    step 0 and never again (static negatives, as STAR). `depth`: top-k searched per query.
    `window`: ranks kept, 0-based after positives are removed (ANCE samples from the top 200).
    `per_query`: candidates kept per query; the batch sampler draws `trainer.negatives_per_query` of
    them. `sampling`: `uniform` draws `per_query` in the window, `top` keeps the best ones.
    False-negative control (dr.mining.filters; applied before the window), each refresh's counts per
    filter in refresh.jsonl: drop a candidate whose score is above `fn_fraction` times the query's best
    positive score (for positive scores) or within `fn_margin` of it; `fn_teacher` (`ranker`: the
    cross-encoder of `ranker=`; `fusion`: BM25 + the starting model, z-scores) judges each query's top
    `fn_teacher_depth` candidates and its positives, and drops those it scores above `fn_teacher_threshold`
    or (`fn_teacher_above_positive`) above the best positive; `denoise` keeps them and samples each with
    weight 1 - sigmoid((teacher(c) - teacher(positive)) / `denoise_temperature`) instead.
    `fn_ranker_threshold`: the older spelling of fn_teacher=ranker with fn_teacher_threshold.
    `passage_max_length`: encode the corpus at this length (null: the model's); `model`: a fixed
    checkpoint to mine with (STAR's warm-up model) instead of the model being trained.
    """

    refresh_every: int = 0
    depth: int = 200
    window: tuple[int, int] = (0, 200)
    per_query: int = 200
    sampling: Literal["uniform", "top"] = "uniform"
    fn_fraction: float | None = None
    fn_margin: float | None = None
    fn_ranker_threshold: float | None = None
    fn_teacher: Literal["ranker", "fusion"] | None = None
    fn_teacher_depth: int = 30
    fn_teacher_threshold: float | None = None
    fn_teacher_above_positive: bool = False
    denoise: bool = False
    denoise_temperature: float = 1.0
    passage_max_length: int | None = None
    model: str | None = None
    index: IndexConfig = field(default_factory=IndexConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.index, dict):
            self.index = IndexConfig(**self.index)
        self.window = tuple(self.window)
        if self.refresh_every < 0:
            raise ValueError(f"miner.refresh_every must be >= 0, got {self.refresh_every}")
        if self.depth <= 0 or self.per_query <= 0:
            raise ValueError(f"miner.depth and miner.per_query must be > 0, got {self.depth}, {self.per_query}")
        lo, hi = self.window
        if not 0 <= lo < hi:
            raise ValueError(f"miner.window must satisfy 0 <= lo < hi, got {list(self.window)}")
        if self.sampling not in ("uniform", "top"):
            raise ValueError(f"miner.sampling must be uniform or top, got {self.sampling!r}")
        if self.index.metric != "ip":
            raise ValueError("miner.index.metric must be ip: the miner ranks by the model's (inner product) score")
        if self.fn_fraction is not None and not 0 < self.fn_fraction:
            raise ValueError(f"miner.fn_fraction must be > 0, got {self.fn_fraction}")
        if self.fn_margin is not None and self.fn_margin < 0:
            raise ValueError(f"miner.fn_margin must be >= 0, got {self.fn_margin}")
        if self.fn_ranker_threshold is not None:
            if self.fn_teacher not in (None, "ranker") or self.fn_teacher_threshold is not None:
                raise ValueError("miner.fn_ranker_threshold is fn_teacher=ranker with fn_teacher_threshold: "
                                 "set one spelling")
            self.fn_teacher, self.fn_teacher_threshold = "ranker", self.fn_ranker_threshold
        if self.fn_teacher not in (None, "ranker", "fusion"):
            raise ValueError(f"miner.fn_teacher must be null, ranker or fusion, got {self.fn_teacher!r}")
        uses_teacher = self.fn_teacher_threshold is not None or self.fn_teacher_above_positive or self.denoise
        if uses_teacher and self.fn_teacher is None:
            raise ValueError("miner.fn_teacher_threshold, fn_teacher_above_positive and denoise need a teacher: "
                             "set miner.fn_teacher=ranker (the cross-encoder of ranker=) or fusion")
        if self.fn_teacher is not None and not uses_teacher:
            raise ValueError(f"miner.fn_teacher={self.fn_teacher} judges candidates for fn_teacher_threshold, "
                             "fn_teacher_above_positive or denoise: set one of them")
        if self.fn_teacher_depth <= 0 or self.denoise_temperature <= 0:
            raise ValueError("miner.fn_teacher_depth and miner.denoise_temperature must be > 0")
        if self.denoise and (self.fn_teacher_threshold is not None or self.fn_teacher_above_positive):
            raise ValueError("miner.denoise re-weights the teacher's suspects instead of dropping them: set denoise "
                             "or fn_teacher_threshold / fn_teacher_above_positive, not both")
        if self.denoise and self.sampling != "uniform":
            raise ValueError("miner.denoise re-weights the sampling of negatives: it needs sampling=uniform")
        if self.denoise and self.per_query >= min(self.depth, self.window[1]) - self.window[0]:
            raise ValueError(f"miner.denoise draws miner.per_query={self.per_query} negatives by weight from the "
                             f"window's candidates, but the window holds at most "
                             f"{min(self.depth, self.window[1]) - self.window[0]}: every one would be kept and the "
                             "weights would do nothing. Set miner.per_query lower (e.g. 20)")

    def due(self, step: int, last_refresh_step: int | None) -> bool:
        """Refresh before `step`? `last_refresh_step` is the step of the negatives in hand (None: none)."""
        if last_refresh_step == step:
            return False
        if self.refresh_every == 0:
            return last_refresh_step is None
        return step % self.refresh_every == 0 or last_refresh_step is None


@contextlib.contextmanager
def passage_length(encoder: DualEncoder, length: int | None) -> Iterator[None]:
    """Temporarily encode passages at `length` tokens."""
    if length is None:
        yield
        return
    old = encoder.config.passage_max_length
    encoder.config.passage_max_length = length
    try:
        yield
    finally:
        encoder.config.passage_max_length = old


def positive_scores(shard: ShardEmbeddings, queries: np.ndarray, positive_rows: list[np.ndarray]) -> np.ndarray:
    """(Q,) best inner product of each query with its positives that lie in this shard (-inf if none)."""
    best = np.full(len(queries), -np.inf, dtype=np.float64)
    wanted = np.unique(np.concatenate(positive_rows)) if positive_rows else np.empty(0, np.int64)
    found: dict[int, np.ndarray] = {}
    for rows, emb in shard.blocks():
        hit = np.isin(rows, wanted)
        found.update(zip(rows[hit].tolist(), emb[hit]))
    for i, pos in enumerate(positive_rows):
        local = [found[int(r)] for r in pos if int(r) in found]
        if local:
            best[i] = float(np.max(np.stack(local) @ queries[i]))
    return best


@dataclass
class RefreshStats:
    version: int
    step: int
    passages: int
    encode_s: float
    query_s: float
    index_s: float
    search_s: float
    total_s: float
    queries: int
    filtered: int
    negatives_per_query: float
    cache_hit: bool
    candidates: int = 0  # retrieved candidates (positives excluded) before the filters
    filtered_by: dict[str, int] = field(default_factory=dict)  # dr.mining.filters.FILTERS -> count
    teacher_pairs: int = 0  # (query, passage) pairs the teacher scored in this refresh (new ones only)
    denoise_mean_weight: float | None = None  # mean sampling weight of the judged candidates

    @property
    def passages_per_s(self) -> float:
        return self.passages / self.encode_s if self.encode_s else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "passages_per_s": self.passages_per_s}


class Miner:
    """Refreshes hard negatives for the training queries; `refresh` is collective under distributed."""

    def __init__(self, config: MinerConfig, cache: EmbeddingCache | None = None,
                 teacher: TeacherFn | None = None) -> None:
        if config.fn_teacher is not None and teacher is None:
            raise ValueError(f"miner.fn_teacher={config.fn_teacher} needs a teacher: a function (training set, "
                             "query id, passage ids) -> scores; dr.train passes the cross-encoder of ranker= "
                             "or the fusion teacher")
        self.config = config
        self.cache = cache
        self.teacher = teacher
        self._judged: dict[tuple[str, str], float] = {}  # the teacher is fixed: its scores are kept

    def search(self, encoder: DualEncoder, train_set: RetrievalSet, qids: Sequence[str], persist: bool = False
               ) -> tuple[Run, dict[str, float], dict]:
        """Top-`depth` run of `qids` over the whole corpus, the best positive score per query, timings.
        `persist`: write the corpus embeddings to the disk cache (worth it only for an unchanged model)."""
        cfg, corpus = self.config, train_set.corpus
        if self.cache is not None:
            self.cache.persist = persist
        stats = EncodeStats()
        with passage_length(encoder, cfg.passage_max_length):
            start = time.perf_counter()
            shard = encode_corpus(encoder, corpus, self.cache, stats)
            timing = {"encode_s": time.perf_counter() - start, "passages": stats.passages,
                      "cache_hit": stats.cache_hits > 0}
        start = time.perf_counter()
        q = encode_texts(encoder, "query", [train_set.queries[x] for x in qids], "mine queries")
        self.last_query_embeddings = q  # (len(qids), H): re-clustering for negative-aware batches reuses them
        timing["query_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scores, rows = search(shard, q, cfg.depth, cfg.index)
        timing["index_s"], timing["search_s"] = 0.0, time.perf_counter() - start  # index build is in search_s
        # best positive score per query (for the false-negative filter): each process scores the positives
        # in its shard, then the maximum over processes
        pos_best = np.full(len(qids), -np.inf)
        if cfg.fn_fraction is not None or cfg.fn_margin is not None:
            start = time.perf_counter()
            pos_rows = [corpus.rows_of(train_set.positives(q)) if train_set.positives(q) else np.empty(0, np.int64)
                        for q in qids]
            pos_best = positive_scores(shard, q, pos_rows)
            if world()[1] > 1:
                pos_best = np.max(np.stack(all_gather_object(pos_best)), axis=0)
            timing["search_s"] += time.perf_counter() - start
        # faiss scores are raw inner products; the model's scores divide by the temperature
        temp = encoder.config.temperature
        scores, pos_best = scores / temp, pos_best / temp
        run = ArrayRun(list(qids), scores, rows, corpus.ids)  # per-query dicts only when read
        positive = {qid: float(pos_best[i]) for i, qid in enumerate(qids)}
        return run, positive, timing

    def refresh(self, encoder: DualEncoder, train_set: RetrievalSet, qids: Sequence[str], step: int,
                version: int, persist: bool = False) -> tuple[dict[str, list[str]], RefreshStats]:
        """New negatives for `qids` mined with `encoder`; identical on every process."""
        cfg = self.config
        start = time.perf_counter()
        run, positive_scores, timing = self.search(encoder, train_set, qids, persist)
        qrels = {q: train_set.qrels[q] for q in qids}
        teacher, teacher_positive, new_pairs = None, None, 0
        if cfg.fn_teacher is not None:
            teacher, teacher_positive, new_pairs = self._teacher_scores(run, train_set, qrels)
        # the judged positives leave first (select_negatives would drop them anyway), so the filters count
        # only candidates that could have become negatives
        run = {q: {d: s for d, s in docs.items() if qrels[q].get(d, 0) <= 0} for q, docs in run.items()}
        candidates = sum(len(docs) for docs in run.values())
        run, filtered_by = filter_candidates(
            run, positive_scores, cfg.fn_fraction, cfg.fn_margin, teacher, teacher_positive,
            cfg.fn_teacher_threshold, cfg.fn_teacher_above_positive)
        weights, mean_weight = None, None
        if cfg.denoise:
            weights = denoise_weights(teacher, teacher_positive, cfg.denoise_temperature)
            flat = [w for ws in weights.values() for w in ws.values()]
            mean_weight = float(np.mean(flat)) if flat else None
        filtered = sum(filtered_by.values())
        rng = np.random.default_rng([cfg.seed, version])
        negatives = select_negatives(run, qrels, cfg.window, cfg.per_query, rng, cfg.sampling, weights)
        stats = RefreshStats(
            version=version, step=step, passages=int(timing["passages"]), encode_s=timing["encode_s"],
            query_s=timing["query_s"], index_s=timing["index_s"], search_s=timing["search_s"],
            total_s=time.perf_counter() - start,
            queries=len(qids), filtered=filtered,
            negatives_per_query=float(np.mean([len(v) for v in negatives.values()])) if negatives else 0.0,
            cache_hit=bool(timing["cache_hit"]), candidates=candidates, filtered_by=filtered_by,
            teacher_pairs=new_pairs, denoise_mean_weight=mean_weight,
        )
        by = ", ".join(f"{k} {v}" for k, v in filtered_by.items() if v) or "none"
        logger.info("miner refresh v%d at step %d: encode %.1fs (%d passages) + queries %.1fs, index %.1fs, "
                    "search %.1fs, %d of %d candidates dropped as false negatives (%s)%s, %.1f negatives/query",
                    version, step, stats.encode_s, stats.passages, stats.query_s, stats.index_s, stats.search_s,
                    filtered, candidates, by, "" if mean_weight is None else f", denoise mean weight {mean_weight:.3f}",
                    stats.negatives_per_query)
        return negatives, stats

    def _teacher_scores(self, run: Run, train_set: RetrievalSet, qrels: dict[str, dict[str, int]]
                        ) -> tuple[dict[str, dict[str, float]], dict[str, float], int]:
        """The teacher's scores of each query's top `fn_teacher_depth` candidates (positives excluded) and the
        best of its positives' scores; pairs judged in an earlier refresh are not scored again."""
        depth = self.config.fn_teacher_depth
        judged, best_positive, new = {}, {}, 0
        for qid in sorted(run):
            docs = run[qid]
            positives = sorted(d for d, g in qrels[qid].items() if g > 0)
            ranked = [d for d, _ in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0])) if qrels[qid].get(d, 0) <= 0]
            wanted = ranked[:depth] + positives
            todo = [d for d in wanted if (qid, d) not in self._judged]
            if todo:
                self._judged.update(zip(((qid, d) for d in todo), map(float, self.teacher(train_set, qid, todo))))
                new += len(todo)
            judged[qid] = {d: self._judged[(qid, d)] for d in ranked[:depth]}
            best_positive[qid] = max((self._judged[(qid, d)] for d in positives), default=float("nan"))
        return judged, best_positive, new
