"""`python -m dr.score`: teacher scores from a cross-encoder (or `teacher=fusion`), for a file of (qid, pid)
pairs or for each query's top-k candidates (BM25 and/or a dense model), written as a `qid pid score` TSV.

    python -m dr.score out=scores.tsv                                  # SciFact train: BM25 + dense top-10
    python -m dr.score ranker.name_or_path=outputs/.../export candidates.bm25=30 candidates.dense=0
    python -m dr.score pairs=pairs.tsv out=scores.tsv                  # qid<TAB>pid[<TAB>...] per line
    python -m dr.score teacher=fusion out=fusion.tsv                   # the BM25 + dense fusion teacher instead
    python -m dr.train +experiment=tas_balanced teacher.scores=scores.tsv
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from dr.config import CONFIG_DIR, register_resolvers
from dr.data.errors import ReadPolicy
from dr.data.lines import read_tsv
from dr.data.sources import RetrievalSet
from dr.data.teacher import write_teacher_scores
from dr.encoding.cache import EmbeddingCache
from dr.evaluate import build_retriever
from dr.models.cross_encoder import CrossEncoder
from dr.models.standin import build_encoder
from dr.objectives.fusion_teacher import FusionTeacherConfig
from dr.retrievers.bm25 import BM25Retriever
from dr.retrievers.rerank import score_pairs
from dr.runtime import configure_allocator

logger = logging.getLogger(__name__)
register_resolvers()


def read_pairs(path: str, scored_set: RetrievalSet) -> dict[str, list[str]]:
    """{qid: [pid, ...]} from `qid<TAB>pid` lines (further columns ignored); unknown ids are errors."""
    policy = ReadPolicy(strict=True)
    out: dict[str, list[str]] = {}
    for number, fields in read_tsv(path, policy, tuple(range(2, 7))):
        qid, pid = fields[0].strip(), fields[1].strip()
        if qid not in scored_set.queries:
            policy.bad(path, number, f"query id {qid!r} is not in {scored_set.name}")
        if pid not in scored_set.corpus:
            policy.bad(path, number, f"passage id {pid!r} is not in {scored_set.corpus.source}")
        if pid not in out.setdefault(qid, []):
            out[qid].append(pid)
    return out


def candidates(cfg: DictConfig, scored_set: RetrievalSet) -> dict[str, list[str]]:
    """Each query's BM25 top-k, then the dense model's top-k, then (optionally) its judged positives."""
    out: dict[str, list[str]] = {q: [] for q in scored_set.queries}
    sources = []
    if cfg.candidates.bm25:
        sources.append((BM25Retriever(), int(cfg.candidates.bm25)))
    if cfg.candidates.dense:
        sources.append((build_retriever(cfg), int(cfg.candidates.dense)))
    for retriever, k in sources:
        for qid, docs in retriever.retrieve(scored_set, k).items():
            out[qid] += [d for d in sorted(docs, key=docs.get, reverse=True)[:k] if d not in out[qid]]
    if cfg.candidates.positives:
        for qid in out:
            out[qid] += [d for d in scored_set.positives(qid) if d not in out[qid]]
    return out


def scored_set_of(cfg: DictConfig) -> RetrievalSet:
    if cfg.split == "train":
        return instantiate(cfg.data.train, _convert_="all")
    if cfg.split not in cfg.data.eval_sets:
        raise ValueError(f"split={cfg.split!r}: use train or one of {list(cfg.data.eval_sets)}")
    return instantiate(cfg.data.eval_sets[cfg.split], _convert_="all")


def fusion_scores(cfg: DictConfig, scored_set: RetrievalSet, pairs: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """`teacher=fusion`: the fused teacher's score of each pair (BM25 and model=... over the whole corpus)."""
    teacher = instantiate(cfg.teacher, _convert_="all")
    if not isinstance(teacher, FusionTeacherConfig):
        raise ValueError(f"dr.score teacher=...: only teacher=fusion computes scores here, got {type(teacher).__name__} "
                         "(a cross-encoder teacher is ranker=...)")
    cache = EmbeddingCache(Path(cfg.cache_dir) / "embeddings", dtype=cfg.cache_dtype) if cfg.cache_embeddings else None
    fused = teacher.fused(build_encoder(instantiate(cfg.model, _convert_="all")), scored_set, list(pairs), cache)
    return {q: {p: fused.score(q, p) for p in pids} for q, pids in pairs.items()}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="score")
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    configure_allocator()
    scored_set = scored_set_of(cfg)
    pairs = read_pairs(cfg.pairs, scored_set) if cfg.pairs else candidates(cfg, scored_set)
    if cfg.get("teacher") is None:
        scores = score_pairs(CrossEncoder(instantiate(cfg.ranker, _convert_="all")), scored_set, pairs)
    else:
        scores = fusion_scores(cfg, scored_set, pairs)
    write_teacher_scores(cfg.out, scores)
    wall = time.perf_counter() - start
    n = sum(len(v) for v in scores.values())
    print(f"wrote {cfg.out}: {n} pairs for {len(scores)} queries, {wall:.0f}s "
          f"({n / max(wall, 1e-9):.1f} pairs/s overall)")


if __name__ == "__main__":
    main()
