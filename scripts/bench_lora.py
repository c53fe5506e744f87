"""LoRA against full fine-tuning of the default model at one batch shape: trainable parameters, step time
and peak memory of dr's own training step, each variant in a fresh process (peak RSS is per process).

    python scripts/bench_lora.py                      # every variant, prints a table, writes docs/bench/lora.json
    python scripts/bench_lora.py --child lora         # one variant (what the parent runs)

The step is scripts/bench_train.py's: `+experiment=bm25_negatives` batches (16 queries, each with its
positive and top BM25 negative, lengths 64 / 256), dr's defaults (precision auto, padding-free); `lora`
adds +experiment=lora's adapters (r 16 on query, key, value, dense, dropout 0.1); `lora_qv` the lightest
common setting (r 16 on query and value only, no adapter dropout). Memory: the process's peak resident
set (ru_maxrss) after the steps, and how much of it the steps added over the loaded model and data.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_train import build_dr_trainer

ROOT = Path(__file__).resolve().parents[1]
LORA = ["+model.lora={r:16,alpha:32,dropout:0.1,target_modules:[query,key,value,dense]}"]
LORA_QV = ["+model.lora={r:16,alpha:32,dropout:0.0,target_modules:[query,value]}"]  # peft's BERT default targets
VARIANTS = {"full": [], "lora": LORA, "lora_qv": LORA_QV}


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def child(variant: str, steps: int, warmup: int) -> dict:
    from dr.models.lora import trainable_parameters

    trainer = build_dr_trainer(16, steps + warmup, 64, 256, VARIANTS[variant])
    trainable, total = trainable_parameters(trainer.objective.encoder)
    trainer.model.train()
    for step in range(warmup):
        trainer.training_step(step)
    before = rss_gb()
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        trainer.training_step(step)
    s_per_step = (time.perf_counter() - start) / steps
    peak = rss_gb()
    return {"variant": variant, "trainable_params": trainable, "total_params": total, "s_per_step": s_per_step,
            "peak_rss_gb": peak, "rss_before_timed_steps_gb": before, "steps": steps, "warmup": warmup}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=sorted(VARIANTS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "lora.json")
    a = parser.parse_args()
    if a.child:
        print("RESULT " + json.dumps(child(a.child, a.steps, a.warmup)))
        return 0
    results = {}
    for variant in VARIANTS:
        proc = subprocess.run([sys.executable, __file__, "--child", variant, "--steps", str(a.steps),
                               "--warmup", str(a.warmup)], capture_output=True, text=True, cwd=ROOT)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.stderr.write(proc.stderr[-3000:])
            return 1
        results[variant] = json.loads(line[-1][len("RESULT "):])
    from dr.docs import describe_machine, machine

    full = results["full"]
    print(f"machine: {describe_machine(machine())}")
    print("| | trainable parameters | s/step | peak RSS (GB) |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['trainable_params']:,} of {r['total_params']:,} | {r['s_per_step']:.2f} | "
              f"{r['peak_rss_gb']:.2f} |")
    for name, r in results.items():
        if name != "full":
            print(f"{name} / full: step time {r['s_per_step'] / full['s_per_step']:.2f}x, peak RSS "
                  f"{r['peak_rss_gb'] / full['peak_rss_gb']:.2f}x, trainable "
                  f"{r['trainable_params'] / full['trainable_params']:.4f}x")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": describe_machine(machine()), **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
