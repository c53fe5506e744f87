"""`make scale`: dr's data path on an MS MARCO-shaped synthetic collection, stage by stage (issue 19).

For each collection size and process count, in a fresh dr cache, each stage runs in its own process(es)
(`torchrun` for two) and records wall time, every process's peak RSS and the disk it added:

    corpus    the corpus store (Arrow table + id index), built by the first process, mapped by the others
    bm25      the BM25 index (bm25s), built once under a lock, saved, loaded memory-mapped by the others
    teacher   the 40M-line TAS-B teacher file prepared into a memory-mapped table
    refresh   one miner refresh over the whole collection for the 50,000 training queries: sharded
              encoding with the stand-in encoder (model=standin: a random projection, so the framework's
              own cost is measured), an approximate index per shard, the merged top-200
    evaluate  `python -m dr.evaluate model=standin data=msmarco` on the 6,980 dev queries (exact search)

Collections are generated once per size (scripts/synthetic.py: passage lengths and vocabulary sampled from
the real DL-pool passages; 50,000 training and 6,980 dev queries with qrels) with a 40M-line teacher file
(scripts/teacher_scale.py's generator). Records go to docs/scale/scale.json; docs/SCALE.md is written by hand
from them.

    python scripts/scale.py --passages 1000000 8841823 --processes 1 2
    python scripts/scale.py --passages 100000 --processes 1 --teacher-lines 1000000   # a quick check
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
STAGES = ("corpus", "bm25", "teacher", "refresh", "evaluate")
MINER_INDEX = "IVF1024,PQ48"  # exact search of 50k queries over 8.8M passages is ~340 TFLOP: hours on a CPU


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _train_set(data: Path):
    from dr.data.sources import msmarco_set

    base = data / "msmarco"
    return msmarco_set("msmarco-train", str(base / "collection.tsv"), str(base / "queries.train.tsv"),
                       str(base / "qrels.train.tsv"), layout="pid_text")


def child(stage: str, data: Path, teacher: Path, out: Path) -> None:
    """One stage in this process (one of W under torchrun); appends `{rank, seconds, peak_rss_mb, ...}`."""
    from dr.dist import barrier, init_from_env, world

    init_from_env()
    rank, size = world()
    start = time.perf_counter()
    extra: dict = {}
    if stage == "corpus":
        if rank == 0:
            corpus = _train_set(data).corpus
        barrier()  # as dr.train's main_process_first: the first builds, the others map the cached table
        if rank != 0:
            corpus = _train_set(data).corpus
        extra["passages"] = len(corpus)
    elif stage == "bm25":
        from dr.retrievers.bm25 import BM25Retriever

        train = _train_set(data)
        BM25Retriever().index_for(train.corpus)
        extra["passages"] = len(train.corpus)
    elif stage == "teacher":
        from dr.data.teacher import read_teacher_scores

        scores = read_teacher_scores(teacher, fmt="tasb")
        extra["scores"] = len(scores)
    elif stage == "refresh":
        from dr.encoding.cache import EmbeddingCache
        from dr.config import cache_dir
        from dr.index import IndexConfig
        from dr.mining.miner import Miner, MinerConfig
        from dr.models.standin import StandinConfig

        train = _train_set(data)
        config = MinerConfig(depth=200, window=(0, 200), per_query=30, sampling="uniform",
                             index=IndexConfig(factory=MINER_INDEX, nprobe=16, device="cpu", recall_check=200))
        miner = Miner(config, EmbeddingCache(Path(cache_dir()) / "embeddings", memory_entries=0))
        negatives, stats = miner.refresh(StandinConfig().build(), train, sorted(train.queries), 0, 1, persist=True)
        extra.update(stats.as_dict(), queries=len(negatives))
        extra["encoded_passages"] = extra.pop("passages")  # this process's shard
    else:
        raise ValueError(stage)
    record = {"rank": rank, "world": size, "seconds": time.perf_counter() - start, "peak_rss_mb": _peak_mb(), **extra}
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\n")


def _disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def run_stage(stage: str, data: Path, teacher: Path, cache: Path, processes: int, work: Path) -> dict:
    """Run one stage in fresh process(es); wall time measured around them, RSS reported by each."""
    out = work / f"{stage}.jsonl"
    out.unlink(missing_ok=True)
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes > 1 else []
    env = {**os.environ, "DR_CACHE": str(cache), "DR_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    env.pop("DR_NATIVE_BF16", None)
    if stage == "evaluate":
        run_dir = work / "evaluate"
        cmd = [sys.executable, *launcher, "-m", "dr.evaluate", "model=standin", "data=msmarco",
               "eval_sets=[msmarco-dev-small]", "retriever.index.device=cpu", f"hydra.run.dir={run_dir}"]
    else:
        cmd = [sys.executable, *launcher, str(Path(__file__).resolve()), "--child", stage, "--data", str(data),
               "--teacher", str(teacher), "--out", str(out)]
    before = _disk_mb(cache)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    if stage == "evaluate":
        timings = json.loads((run_dir / "timings.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())["msmarco-dev-small"]
        ranks = [{"rank": r, "peak_rss_mb": m} for r, m in enumerate(timings["peak_rss_mb_per_process"])]
        detail = {"metrics": metrics, "encode_s": timings.get("encode_s"), "cache_hits": timings.get("cache_hits")}
    else:
        ranks = [json.loads(x) for x in out.read_text().splitlines()]
        detail = {k: v for k, v in ranks[0].items() if k not in ("rank", "world", "seconds", "peak_rss_mb")}
    return {"stage": stage, "processes": processes, "wall_s": wall, "peak_rss_mb": max(r["peak_rss_mb"] for r in ranks),
            "peak_rss_mb_per_process": [r["peak_rss_mb"] for r in ranks], "disk_added_mb": _disk_mb(cache) - before,
            **detail}


def prepare_data(work: Path, passages: int, teacher_lines: int) -> tuple[Path, Path, dict]:
    """The synthetic collection and teacher file for `passages` (generated once, kept under `work`)."""
    data, teacher = work / f"data-{passages}", work / f"data-{passages}" / "teacher.tsv"
    record = {}
    if not (data / "msmarco" / "qrels.dev.small.tsv").exists():
        start = time.perf_counter()
        subprocess.run([sys.executable, str(SCRIPTS / "synthetic.py"), str(data), "--passages", str(passages),
                        "--train-queries", "50000", "--dev-queries", "6980"], check=True, capture_output=True)
        record["generate_collection_s"] = time.perf_counter() - start
    if not teacher.exists():
        sys.path.insert(0, str(SCRIPTS))
        from teacher_scale import generate

        start = time.perf_counter()
        generate(teacher, teacher_lines, queries=50_000, passages=passages)
        record["generate_teacher_s"] = time.perf_counter() - start
    record["collection_mb"] = (data / "msmarco" / "collection.tsv").stat().st_size / 2**20
    record["teacher_mb"] = teacher.stat().st_size / 2**20
    return data, teacher, record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, nargs="+", default=[1_000_000, 8_841_823])
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--teacher-lines", type=int, default=40_000_000)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "dr-scale")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "scale" / "scale.json")
    ap.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--teacher", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:  # --out is then this stage's per-process record file
        child(a.child, a.data, a.teacher, a.out)
        return 0
    records = json.loads(a.out.read_text()) if a.out.exists() else []
    for passages in a.passages:
        data, teacher, prep = prepare_data(a.work, passages, a.teacher_lines)
        for processes in a.processes:
            work = a.work / f"run-{passages}-{processes}"
            cache = work / "cache"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            run = {"passages": passages, "processes": processes, "data": prep, "stages": [],
                   "date": time.strftime("%Y-%m-%d %H:%M %z"), "loadavg_before": os.getloadavg()}
            start = time.perf_counter()
            for stage in a.stages:
                record = run_stage(stage, data, teacher, cache, processes, work)
                run["stages"].append(record)
                print(json.dumps({"passages": passages, **record}), flush=True)
            run["total_s"] = time.perf_counter() - start
            run["cache_mb"] = _disk_mb(cache)
            run["loadavg_after"] = os.getloadavg()
            records = [r for r in records if (r["passages"], r["processes"]) != (passages, processes)] + [run]
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(records, indent=1) + "\n")
            print(json.dumps({"passages": passages, "processes": processes, "total_s": run["total_s"],
                              "cache_mb": run["cache_mb"]}), flush=True)
            shutil.rmtree(cache, ignore_errors=True)  # 8.8M x 384 float32 embeddings alone are 13 GB
    return 0


if __name__ == "__main__":
    sys.exit(main())
