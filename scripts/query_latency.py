"""Query encoding latency of query towers: ms per query at batch 1 and batch 32, on SciFact-test's queries,
each tower in this process one after the other, after a warm-up.

    python scripts/query_latency.py sentence-transformers/all-MiniLM-L6-v2 outputs/results/query_distill/export
    python scripts/query_latency.py A B --precision fp32 --repeats 3

An argument is a model name or directory; an export with separate towers (query/ and passage/) is read from
its query/ tower. Precision: dr's encoding precision (auto: bf16 on native-bf16 CPUs, dr.models.precision).
Batch 1 encodes every query alone; batch 32 encodes them in length-sorted batches of 32 (dr's encode path).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the queries; the best is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[1] / "data")
    parser.add_argument("--out", type=Path)
    a = parser.parse_args()
    import torch

    from dr.data.sources import beir_set
    from dr.docs import describe_machine, machine
    from dr.models.dual_encoder import DualEncoder, EncoderConfig
    from dr.runtime import configure_allocator

    configure_allocator()
    if a.threads:
        torch.set_num_threads(a.threads)
    queries = list(beir_set("scifact-test", str(a.data_dir / "scifact"), "test").queries.values())
    results = []
    for name in a.models:
        path = Path(name) / "query" if (Path(name) / "query").is_dir() else Path(name)
        enc = DualEncoder(EncoderConfig(str(path) if path.exists() else name, precision=a.precision,
                                        show_progress=False, batch_size=32))
        layers = int(enc.query_model.config.num_hidden_layers)
        row = {"model": name, "layers": layers, "precision": enc.precision.name, "queries": len(queries)}
        for batch in (1, 32):
            enc.config.batch_size = batch
            enc.encode_queries(queries[:64])  # warm-up
            best = float("inf")
            for _ in range(a.repeats):
                start = time.perf_counter()
                enc.encode_queries(queries)
                best = min(best, time.perf_counter() - start)
            row[f"ms_per_query_batch{batch}"] = 1000 * best / len(queries)
        results.append(row)
        print(json.dumps(row))
    base = results[0]
    print(f"machine: {describe_machine(machine())}")
    print("| query tower | layers | ms/query, batch 1 | ms/query, batch 32 |")
    print("|---|---:|---:|---:|")
    for r in results:
        ratio = "" if r is base else (f" ({base['ms_per_query_batch1'] / r['ms_per_query_batch1']:.2f}x faster)")
        ratio32 = "" if r is base else (f" ({base['ms_per_query_batch32'] / r['ms_per_query_batch32']:.2f}x faster)")
        print(f"| {r['model']} | {r['layers']} | {r['ms_per_query_batch1']:.2f}{ratio} | "
              f"{r['ms_per_query_batch32']:.2f}{ratio32} |")
    if a.out:
        a.out.write_text(json.dumps({"machine": describe_machine(machine()), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
