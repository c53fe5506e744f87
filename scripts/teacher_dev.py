"""Each teacher's own nDCG@10 on the dev split that `dr.train` holds out (never the test set): BM25, the
zero-shot dense model, BM25 + dense fusion at a few weights and normalizations (retriever=hybrid), and the
shipped SciFact cross-encoder reranking BM25's top 100 (teacher=scifact's model).

    python scripts/teacher_dev.py [--dev-queries 80] [--seed 42] [--out FILE]
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dr.config import CONFIG_DIR, register_resolvers
from dr.data.groups import split_dev
from dr.encoding.cache import EmbeddingCache
from dr.eval.dev import dev_set
from dr.eval.evaluator import Evaluator
from dr.models.cross_encoder import CrossEncoder, CrossEncoderConfig
from dr.models.standin import build_encoder
from dr.retrievers.bm25 import BM25Retriever
from dr.retrievers.dense import DenseRetriever
from dr.retrievers.hybrid import HybridRetriever
from dr.retrievers.rerank import RerankRetriever


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev-queries", type=int, default=80)  # trainer/cpu.yaml's dev_queries
    ap.add_argument("--seed", type=int, default=42)  # trainer/cpu.yaml's seed
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=tas_balanced"])
    train_set = instantiate(cfg.data.train, _convert_="all")
    _, dev_qids = split_dev(train_set, a.dev_queries, a.seed)
    dev = dev_set(train_set, dev_qids, None, name=f"{train_set.name}-dev")
    encoder = build_encoder(instantiate(cfg.model, _convert_="all"))
    cache = EmbeddingCache(Path(cfg.cache_dir) / "embeddings", dtype=cfg.cache_dtype)
    dense = functools.partial(DenseRetriever)
    bm25 = BM25Retriever()
    teacher = CrossEncoder(CrossEncoderConfig(cfg.teacher.inbatch_model, max_length=cfg.teacher.inbatch_max_length,
                                              show_progress=False))
    retrievers = {
        "bm25": bm25,
        "dense (zero-shot)": DenseRetriever(encoder, cache=cache),
        "cross-encoder teacher reranking BM25 top 100": RerankRetriever(bm25, teacher, depth=100),
    }
    for fusion, weights in [("zscore", (1.0, 1.0)), ("zscore", (0.5, 1.0)), ("zscore", (1.0, 0.5)),
                            ("minmax", (1.0, 1.0)), ("rrf", (1.0, 1.0))]:
        name = f"fusion {fusion}, weights bm25 {weights[0]:g} / dense {weights[1]:g}, top 100 each"
        retrievers[name] = HybridRetriever(encoder, bm25, dense, cache, k=100, fusion=fusion, weights=weights)
    evaluator = Evaluator(measures=list(cfg.measures), depth=100)
    rows = []
    for name, retriever in retrievers.items():
        start = time.perf_counter()
        _, metrics = evaluator.evaluate_set(retriever, dev)
        rows.append({"teacher": name, "nDCG@10": metrics["nDCG@10"], "RR@10": metrics["RR@10"],
                     "R@100": metrics["R@100"], "wall_s": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    if a.out:
        a.out.write_text(json.dumps({"dev_queries": len(dev_qids), "seed": a.seed, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
