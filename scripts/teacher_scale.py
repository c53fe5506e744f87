"""Measure the teacher-score table at MS MARCO size: first preparation, later loads, peak memory.

    python scripts/teacher_scale.py                      # 40M lines (~1.5 GB file), about 2-3 minutes
    python scripts/teacher_scale.py --lines 1000000 --dir /tmp/ts

Writes a synthetic TAS-B teacher file (`score_pos score_neg qid pid_pos pid_neg`) drawn like MS MARCO's
(about 400k training queries with one or two positives each, negatives among 8.8M passages), then in fresh
processes: prepares the table on an empty dr cache, loads it again and looks up scores. Prints one JSON
record (times in seconds, peak RSS in MB from getrusage, the CPU and the load average, since the figures
depend on what else the machine runs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MSMARCO_PASSAGES = 8_841_823
MSMARCO_TRAIN_QIDS = 1_185_869  # largest training query id: ids are drawn below it


def generate(path: Path, lines: int, queries: int, passages: int, seed: int = 0) -> None:
    """The synthetic file, written in blocks of 2M lines with pyarrow (no Python loop per line).

    Like the real file, a (query, passage) has one score wherever it appears: scores are a function of the
    pair (a hash, plus 8 for a positive), rounded to 4 decimals.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    qids = np.sort(rng.choice(MSMARCO_TRAIN_QIDS, size=queries, replace=False))
    positives = rng.integers(0, passages, size=(queries, 2))
    positives[rng.random(queries) >= 0.06, 1] = -1  # MS MARCO: ~6% of training queries have a second positive

    def score(q: np.ndarray, pid: np.ndarray) -> np.ndarray:
        mix = q.astype(np.uint64) * np.uint64(2654435761) + pid.astype(np.uint64) * np.uint64(40503)
        h = mix % np.uint64(100_003)
        relevant = (pid == positives[q, 0]) | (pid == positives[q, 1])
        return np.round(h.astype(np.float64) / 10_000.0 - 5.0 + 8.0 * relevant, 4)

    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for start in range(0, lines, 2_000_000):
            n = min(2_000_000, lines - start)
            q = rng.integers(0, queries, size=n)
            pick = np.where(positives[q, 1] >= 0, rng.integers(0, 2, size=n), 0)
            pos = positives[q, pick]
            neg = rng.integers(0, passages, size=n)
            neg = np.where((neg == positives[q, 0]) | (neg == positives[q, 1]), (neg + 1) % passages, neg)
            cols = [score(q, pos), score(q, neg), qids[q], pos, neg]
            text = pc.binary_join_element_wise(*[pc.cast(pa.array(c), pa.string()) for c in cols], "\t")
            f.write(("\n".join(text.to_pylist()) + "\n").encode())
    os.replace(tmp, path)


def child(mode: str, path: str, cache: str, lookups: int) -> dict:
    """Runs in a fresh process: `prepare` (empty cache) or `load` (prepared), then random lookups."""
    from dr.data.teacher import read_teacher_scores

    start = time.perf_counter()
    teacher = read_teacher_scores(path, fmt="tasb", cache_dir=cache)
    seconds = time.perf_counter() - start
    table = teacher.scores.table
    rng = np.random.default_rng(1)
    qs = [x.decode() for x in table.qids[rng.integers(0, len(table.qids), lookups)].tolist()]
    t0 = time.perf_counter()
    found = 0
    for qid in qs:
        pairs = teacher.pairs[qid]
        found += teacher.score(qid, pairs[0][1]) is not None
    per_query = (time.perf_counter() - t0) / max(lookups, 1)
    assert found == lookups, "a listed pair has no score"
    return {"seconds": round(seconds, 2), "scores": len(teacher), "queries": len(table.qids),
            "pairs": int(len(table.pair_pos)), "query_lookup_ms": round(per_query * 1e3, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def run_child(mode: str, path: Path, cache: Path, lookups: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--file", str(path), "--cache", str(cache),
           "--lookups", str(lookups)]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record["process_seconds"] = round(time.perf_counter() - start, 2)  # with interpreter start and imports
    return record


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=40_000_000)
    ap.add_argument("--queries", type=int, default=400_000)
    ap.add_argument("--passages", type=int, default=MSMARCO_PASSAGES)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/dr-teacher-scale"))
    ap.add_argument("--lookups", type=int, default=1000)
    ap.add_argument("--keep", action="store_true", help="keep the generated file and the prepared table")
    ap.add_argument("--child", choices=["prepare", "load"])
    ap.add_argument("--file")
    ap.add_argument("--cache")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.file, args.cache, args.lookups)))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / f"tasb_{args.lines}.tsv"
    start = time.perf_counter()
    if not path.exists():
        generate(path, args.lines, args.queries, args.passages)
    generated = time.perf_counter() - start
    cache = args.dir / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    prepare = run_child("prepare", path, cache, args.lookups)
    load = run_child("load", path, cache, args.lookups)
    table_bytes = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    record = {"lines": args.lines, "file_mb": round(path.stat().st_size / 2**20),
              "generate_seconds": round(generated, 1),
              "prepare": prepare, "load": load, "table_mb": round(table_bytes / 2**20),
              "cpu": cpu_model(), "cores": os.cpu_count(), "loadavg": os.getloadavg()}
    print(json.dumps(record, indent=1))
    if not args.keep:
        shutil.rmtree(cache, ignore_errors=True)
        path.unlink()


if __name__ == "__main__":
    main()
