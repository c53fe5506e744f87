"""`python -m dr.evaluate`: evaluate a checkpoint (or BM25) on the configured sets.

    python -m dr.evaluate                                     # base model, SciFact-test + DL19-pool
    python -m dr.evaluate model.name_or_path=outputs/.../export
    python -m dr.evaluate retriever=bm25 hydra.run.dir=outputs/bm25
    python -m dr.evaluate retriever=rerank                    # the SciFact teacher reranks BM25's top 100
    torchrun --nproc_per_node 2 -m dr.evaluate                # sharded: each process encodes 1/2 of the corpus
"""
from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from dr.config import CONFIG_DIR, eval_set_names, register_resolvers
from dr.data.sources import RetrievalSet
from dr.dist import all_gather_object, init_from_env, peak_rss_mb, shutdown, world
from dr.encoding.cache import EmbeddingCache, reused_from_earlier_runs
from dr.eval.evaluator import Evaluator, format_table
from dr.io import atomic_write_json
from dr.models.cross_encoder import CrossEncoder
from dr.models.standin import build_encoder
from dr.retrievers.dense import DenseRetriever
from dr.retrievers.rerank import RerankRetriever
from dr.runtime import configure_allocator

logger = logging.getLogger(__name__)
register_resolvers()


def build_eval_sets(cfg: DictConfig, only: list[str] | None) -> list[RetrievalSet]:
    names = eval_set_names(cfg.data, only or None, "eval_sets")
    return [instantiate(cfg.data.eval_sets[n], _convert_="all") for n in names]


def build_retriever(cfg: DictConfig):
    """The configured retriever; `retriever=rerank` wraps its first stage with the `ranker=` cross-encoder."""
    retriever = instantiate(cfg.retriever, _convert_="all")
    if isinstance(retriever, functools.partial) and retriever.func is RerankRetriever:
        if cfg.get("ranker") is None:
            raise ValueError("retriever=rerank needs a cross-encoder: ranker=scifact_teacher or ranker=minilm "
                             "ranker.name_or_path=PATH")
        first = retriever.keywords["first_stage"]
        first_stage = _with_encoder(first, cfg) if isinstance(first, functools.partial) else first
        ranker = CrossEncoder(instantiate(cfg.ranker, _convert_="all"))
        return retriever(first_stage=first_stage, encoder=ranker)
    return _with_encoder(retriever, cfg) if isinstance(retriever, functools.partial) else retriever


def _with_encoder(retriever: functools.partial, cfg: DictConfig):
    """A dense retriever gets the encoder and the embedding cache."""
    encoder = build_encoder(instantiate(cfg.model, _convert_="all"))
    cache = EmbeddingCache(Path(cfg.cache_dir) / "embeddings", dtype=cfg.cache_dtype) if cfg.cache_embeddings else None
    return retriever(encoder=encoder, cache=cache)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, dict[str, float]]:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    start = time.perf_counter()
    configure_allocator()
    init_from_env()  # under torchrun / accelerate launch: join the process group (sharded dense retrieval)
    sets = build_eval_sets(cfg, list(cfg.eval_sets) if cfg.eval_sets else None)
    retriever = build_retriever(cfg)
    evaluator = Evaluator(measures=list(cfg.measures), depth=int(cfg.depth))
    rank, size = world()
    metrics = evaluator.evaluate(retriever, sets, out_dir if rank == 0 else None)
    timings = {"wall_s": time.perf_counter() - start, "per_set_s": evaluator.timings, "world_size": size,
               "embedding_cache_reused": reused_from_earlier_runs(),
               "peak_rss_mb_per_process": all_gather_object(peak_rss_mb())}
    if isinstance(retriever, DenseRetriever):
        stats = all_gather_object(retriever.stats)  # per process
        passages, seconds = sum(s.passages for s in stats), max(s.seconds for s in stats)
        timings.update(passages_encoded=passages, encode_s=seconds, passages_per_s=passages / seconds if seconds
                       else float("nan"), cache_hits=stats[0].cache_hits,
                       passages_encoded_per_process=[s.passages for s in stats])
    if rank == 0:
        atomic_write_json(out_dir / "timings.json", timings)
        print(format_table(metrics))
        print(f"metrics: {out_dir / 'metrics.json'}  runs: {out_dir / 'runs'}  timings: {json.dumps(timings)}")
    shutdown()
    return metrics


if __name__ == "__main__":
    main()
