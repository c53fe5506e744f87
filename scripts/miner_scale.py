"""Peak memory and search time of the miner's index-and-search step on a synthetic corpus.

    python scripts/miner_scale.py --passages 1000000 --dim 384 --queries 729 --depth 200 --shards 1 2

Runs each configuration in a fresh subprocess (so peak RSS is that configuration's own) and prints a
JSON line per configuration plus a markdown table. With `--shards S` the corpus is split as the miner
splits it across S processes; the shards run one after another here and the reported peak is the
largest single shard's (what one process of an S-process run holds), followed by the top-k merge.
The encoder is not part of this measurement (its throughput is measured by scripts/bench_encode.py).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(passages: int, dim: int, queries: int, depth: int, shards: int, factory: str, seed: int) -> dict:
    import faiss
    import numpy as np

    from dr.index import IndexConfig
    from dr.index import merge_topk, search_blocks

    faiss.omp_set_num_threads(max(1, faiss.omp_get_max_threads()))
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((queries, dim), dtype=np.float32)
    rows = np.arange(passages)
    parts, index_s, search_s, peak_mb = [], 0.0, 0.0, 0.0
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for rank in range(shards):
        mine = np.array_split(rows, shards)[rank]
        emb = np.empty((len(mine), dim), np.float32)  # generated in chunks: one copy in RAM, as the miner
        for i in range(0, len(mine), 100_000):
            emb[i : i + 100_000] = rng.standard_normal((min(100_000, len(mine) - i), dim), dtype=np.float32)
        start = time.perf_counter()
        s, r = search_blocks(q, lambda: [(mine, emb)], len(mine), depth, IndexConfig(factory=factory, device="cpu"))
        t_index, t_search = 0.0, time.perf_counter() - start  # an index is built inside the search
        parts.append((s, r))
        index_s, search_s = index_s + t_index, search_s + t_search
        emb = None  # this shard's block is freed before the next one is generated
        peak_mb = max(peak_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    start = time.perf_counter()
    scores, merged = merge_topk(parts, depth)
    merge_s = time.perf_counter() - start
    assert merged.shape == (queries, depth)
    return {
        "passages": passages, "dim": dim, "queries": queries, "depth": depth, "shards": shards,
        "factory": factory, "embeddings_mb": passages * dim * 4 / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "baseline_rss_mb": base_mb,
        "index_s": index_s, "search_s": search_s, "merge_s": merge_s,
        "search_ms_per_query": 1000 * search_s / queries,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=729, help="default: SciFact's training queries minus dev")
    ap.add_argument("--depth", type=int, default=200)
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--factory", default="Flat")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.passages, args.dim, args.queries, args.depth, args.shards[0], args.factory,
                               args.seed)))
        return
    rows = []
    for shards in args.shards:
        cmd = [sys.executable, __file__, "--child", "--passages", str(args.passages), "--dim", str(args.dim),
               "--queries", str(args.queries), "--depth", str(args.depth), "--shards", str(shards),
               "--factory", args.factory, "--seed", str(args.seed)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(out, flush=True)
    print("\n| passages x dim | shards | embeddings MB | peak RSS MB | index s | search s | ms/query | merge s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['passages']:,} x {r['dim']} | {r['shards']} | {r['embeddings_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r['index_s']:.1f} | {r['search_s']:.1f} | {r['search_ms_per_query']:.1f} | {r['merge_s']:.2f} |")


if __name__ == "__main__":
    main()
