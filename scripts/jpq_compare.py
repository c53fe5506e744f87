"""Flat index vs plain OPQ+PQ vs JPQ for the same starting encoder, measured in one run.

    python scripts/jpq_compare.py outputs/jpq/default [--sets scifact-test dl19-pool] [--out FILE.json]

RUN is a `+experiment=jpq` run directory. The three retrievers:
  - flat:    the starting checkpoint (RUN/config.yaml's model.name_or_path), exact inner product (IndexFlatIP);
  - OPQ+PQ:  the same checkpoint over RUN/pq-init/index.faiss (faiss OPQ + PQ, untrained: JPQ's start);
  - JPQ:     RUN/export's query tower over RUN/export/index.faiss (trained centroids, same codes).
On a corpus other than the one the index was built on, passages are coded with that index's rotation and
centroids. Per set: RR@10, nDCG@10, R@100, the index size in bytes (serialized faiss index), the
compression ratio against flat, and CPU query latency (one query at a time, faiss threads as configured:
query encoding, search, and their sum; median over the set's queries). Prints markdown tables and writes
JSON. Corpus embeddings come from the dr cache (the starting checkpoint's passage tower is never trained).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import faiss
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dr.config import CONFIG_DIR, register_resolvers
from dr.encoding.cache import EmbeddingCache
from dr.eval.evaluator import Evaluator
from dr.index import IndexConfig, build_index
from dr.models.dual_encoder import DualEncoder, EncoderConfig
from dr.index.pq import index_bytes
from dr.retrievers.dense import DenseRetriever
from dr.retrievers.pq import PQRetriever

MEASURES = ["RR@10", "nDCG@10", "R@100"]


def latency_ms(encoder: DualEncoder, index: faiss.Index, queries: list[str], depth: int) -> dict[str, float]:
    """Median per-query milliseconds: encoding one query, searching one query, and both."""
    enc, search = [], []
    for text in queries:
        t0 = time.perf_counter()
        q = encoder.encode_queries([text])
        t1 = time.perf_counter()
        index.search(q, depth)
        t2 = time.perf_counter()
        enc.append(1e3 * (t1 - t0))
        search.append(1e3 * (t2 - t1))
    return {"encode_ms": statistics.median(enc), "search_ms": statistics.median(search),
            "total_ms": statistics.median([a + b for a, b in zip(enc, search)])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--sets", nargs="+", default=["scifact-test", "dl19-pool"])
    parser.add_argument("--depth", type=int, default=100, help="passages retrieved per query (R@100 needs 100)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default RUN/jpq_compare.json)")
    args = parser.parse_args()
    register_resolvers()
    run_cfg = OmegaConf.load(args.run / "config.yaml")
    for need in (args.run / "pq-init" / "index.faiss", args.run / "export" / "index.faiss"):
        if not need.exists():
            sys.exit(f"{need} not found: {args.run} is not a finished +experiment=jpq run")
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"data={run_cfg.data.name}"])
    sets = [instantiate(cfg.data.eval_sets[n], _convert_="all") for n in args.sets]
    model_cfg: EncoderConfig = instantiate(run_cfg.model, _convert_="all")
    model_cfg = dataclasses.replace(model_cfg, show_progress=False)
    start_cfg = dataclasses.replace(model_cfg, shared=True)
    base = DualEncoder(start_cfg)
    jpq = DualEncoder(dataclasses.replace(model_cfg, name_or_path=str(args.run / "export"), shared=False))
    cache = EmbeddingCache(Path(cfg.cache_dir) / "embeddings")
    evaluator = Evaluator(measures=MEASURES, depth=args.depth)
    flat = DenseRetriever(base, index=IndexConfig(factory="Flat", device="cpu"), cache=cache)
    methods = {
        "flat": flat,
        "OPQ+PQ": PQRetriever(base, index_path=str(args.run / "pq-init" / "index.faiss"), cache=cache),
        "JPQ": PQRetriever(jpq, index_path=str(args.run / "export" / "index.faiss"), cache=cache),
    }
    results: list[dict] = []
    for eval_set in sets:
        queries = [eval_set.queries[q] for q in eval_set.queries]
        flat_bytes = None
        for name, retriever in methods.items():
            _, metrics = evaluator.evaluate_set(retriever, eval_set)
            if name == "flat":
                index = build_index(retriever.corpus_matrix(eval_set.corpus), retriever.index).index
                encoder = base
            else:
                index, _ = retriever.index_for(eval_set)
                encoder = retriever.encoder
            size = index_bytes(index)
            flat_bytes = flat_bytes or size
            row = {"set": eval_set.name, "method": name, **metrics, "passages": int(index.ntotal),
                   "index_bytes": size, "compression": flat_bytes / size,
                   **latency_ms(encoder, index, queries, args.depth)}
            results.append(row)
            print(json.dumps(row), flush=True)
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "torch_threads": torch.get_num_threads(), "faiss_threads": faiss.omp_get_max_threads(),
               "faiss": faiss.__version__, "torch": torch.__version__}
    out = args.out or args.run / "jpq_compare.json"
    out.write_text(json.dumps({"run": str(args.run), "machine": machine, "results": results}, indent=2) + "\n")
    print(f"\nmachine: {machine}\n")
    print("| set | method | RR@10 | nDCG@10 | R@100 | index bytes | compression | encode ms | search ms | total ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['set']} | {r['method']} | {r['RR@10']:.4f} | {r['nDCG@10']:.4f} | {r['R@100']:.4f} | "
              f"{r['index_bytes']:,} | {r['compression']:.1f}x | {r['encode_ms']:.1f} | {r['search_ms']:.2f} | "
              f"{r['total_ms']:.1f} |")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
