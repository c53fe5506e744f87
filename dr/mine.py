"""`python -m dr.mine`: a dense model's top-k for the training queries, turned into a negatives file.

    python -m dr.mine model.name_or_path=outputs/.../export out=negatives.tsv window=[3,200] per_query=30
    python -m dr.train negatives=file negatives.path=negatives.tsv trainer.negatives_per_query=7
    torchrun --nproc_per_node 8 -m dr.mine ...      # sharded: each process encodes 1/8 of the corpus

Positives are removed before the rank window is applied (`dr.mining.select.select_negatives`).
"""
from __future__ import annotations

import logging
import time

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from dr.config import CONFIG_DIR, register_resolvers
from dr.data.sources import RetrievalSet
from dr.dist import init_from_env, shutdown, world
from dr.evaluate import build_retriever
from dr.mining.select import select_negatives
from dr.negatives.file import write_negatives
from dr.retrievers import retrieve_run
from dr.runtime import configure_allocator

logger = logging.getLogger(__name__)
register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="mine")
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    configure_allocator()
    init_from_env()  # under torchrun: each process encodes and searches one shard of the corpus
    train_set: RetrievalSet = instantiate(cfg.data.train, _convert_="all")
    retriever = build_retriever(cfg)  # the same encoder + cache wiring as dr.evaluate
    run = retrieve_run(retriever, train_set, int(cfg.depth))
    rank = world()[0]
    shutdown()  # the last collective is behind; rank 0 writes the file alone
    if rank != 0:
        return
    negatives = select_negatives(run, train_set.qrels, tuple(cfg.window), int(cfg.per_query),
                                 np.random.default_rng(int(cfg.seed)), cfg.sampling)
    write_negatives(cfg.out, negatives)
    per_query = np.mean([len(v) for v in negatives.values()]) if negatives else 0.0
    print(f"wrote {cfg.out}: {len(negatives)} queries, {per_query:.1f} negatives each, "
          f"{time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
