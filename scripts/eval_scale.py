"""Peak memory and wall time of a sharded evaluation at scale, with the stand-in encoder (issue 18).

Builds (once) an MS MARCO-shaped synthetic collection (scripts/synthetic.py), then runs the real
`python -m dr.evaluate` on its 6,980 dev queries with `model=standin` (a random-projection encoder of
dimension 384 that costs almost nothing, so the figures are the framework's own), under
`torchrun --nproc_per_node W`, once per index factory. Reports each process's peak
RSS (from dr.evaluate's timings.json) against the float32 size of the corpus embeddings. The cache starts
empty: the first factory's run encodes the corpus, later ones read its memory-mapped parts.

    python scripts/eval_scale.py --passages 1000000 --processes 2 --factories Flat IVF1024,PQ48
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=1_000_000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--factories", nargs="+", default=["Flat", "IVF1024,PQ48"])
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "dr-eval-scale")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON records here")
    a = ap.parse_args()
    data = a.work / f"data-{a.passages}"
    if not (data / "msmarco" / "qrels.dev.small.tsv").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "synthetic.py"), str(data), "--passages",
                        str(a.passages), "--train-queries", "1000"], check=True)
    records = []
    dim = 384
    cache = a.work / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # the first factory encodes; later ones read the cached parts
    for factory in a.factories:
        run_dir = a.work / f"eval-{factory.replace(',', '_')}-{a.processes}"
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(a.processes)] if a.processes > 1 else []
        cmd = [sys.executable, *launcher, "-m", "dr.evaluate", "model=standin", "data=msmarco",
               "eval_sets=[msmarco-dev-small]", f"depth={a.depth}", f"retriever.index.factory='{factory}'",
               "retriever.index.device=cpu", f"hydra.run.dir={run_dir}"]
        env = {**os.environ, "DR_DATA_DIR": str(data), "DR_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            return 1
        timings = json.loads((run_dir / "timings.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        emb_mb = a.passages * dim * 4 / 2**20
        peaks = timings["peak_rss_mb_per_process"]
        record = {"passages": a.passages, "dim": dim, "processes": a.processes, "factory": factory,
                  "depth": a.depth, "wall_s": wall, "encode_s": timings.get("encode_s"),
                  "per_set_s": timings["per_set_s"], "embeddings_float32_mb": emb_mb,
                  "peak_rss_mb_per_process": peaks, "peak_over_embeddings": max(peaks) / emb_mb,
                  "metrics": metrics["msmarco-dev-small"], "command": " ".join(cmd[1:])}
        print(json.dumps(record), flush=True)
        records.append(record)
    if a.out:
        a.out.write_text(json.dumps(records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
