"""dr's training step against this machine's limits, one measurement per process (run by scripts/bench.py).

    python scripts/bench_step.py mfu --precision fp32      # fp32 matmul peak, FLOPs and time of fp32 steps
    python scripts/bench_step.py mfu --precision auto      # bf16 matmul peak, the default (auto) step
    python scripts/bench_step.py profile                   # top operators of one default step

`mfu`: the best `torch.mm` FLOP/s over square sizes in the step's matmul dtype (fp32 for `fp32`, bf16 for
`auto`, whatever auto resolves to, so the bf16 peak is known on every CPU), the same for the model's
widest matmul shape, then dr training steps (`scripts/bench_train.py`'s `build_dr_trainer`, its padding-free
batches and fused AdamW kept): each measured step runs once under `FlopCounterMode` (its FLOPs) and once
more, with the same batch, timed (the counter's dispatch overhead stays out of the time). With
padding-free batches the counter sees the matmuls that actually run, on real tokens only: fewer FLOPs
than the same batch padded, so the FLOP/s are of useful work. `auto` skips the step where auto resolves to
fp32 (it would repeat the fp32 one).

`profile`: one default step after the warm-up under `torch.profiler.profile(activities=[CPU])`, operators
ranked by self CPU time, and the share of matmul-type operators. Prints `RESULT <json>`; --out writes it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench import matmul_flops, mfu
from bench_train import build_dr_trainer, dr_settings, precision_overrides

# Operators whose self time is matrix multiplication (forward and backward; SDPA's own kernels included).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")
MATMUL_PREFIXES = ("aten::_scaled_dot_product",)
MAX_MATMUL_S = 5.0  # a square matmul slower than this (bf16 emulated on a CPU without it) stops the sweep


def is_matmul(name: str) -> bool:
    return name in MATMUL_OPS or name.startswith(MATMUL_PREFIXES)


def best_rate(a, b, repeats: int) -> tuple[float, float]:
    """(best FLOP/s, best seconds) of `a @ b` over `repeats` timed runs after one warm-up."""
    import torch

    out = torch.empty(a.shape[0], b.shape[1], dtype=a.dtype)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return matmul_flops(a.shape[0], a.shape[1], b.shape[1]) / best, best


def matmul_peak(dtype, sizes: list[int], repeats: int) -> dict:
    """FLOP/s of square (n, n) x (n, n) products in `dtype`, smallest first; the sweep stops after a
    product slower than MAX_MATMUL_S."""
    import torch

    torch.manual_seed(0)
    rates = {}
    for n in sorted(sizes):
        rates[str(n)], seconds = best_rate(torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype), repeats)
        if seconds > MAX_MATMUL_S:
            break
    return {"matmul_flops_per_s": rates, "peak_flops_per_s": max(rates.values())}


def step_flops_and_time(trainer, warmup: int, steps: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    for step in range(warmup):
        trainer.training_step(step)
    flops, seconds, by_op = 0.0, 0.0, {}
    for step in range(warmup, warmup + steps):
        with FlopCounterMode(display=False) as counter:
            trainer.training_step(step)
        flops += counter.get_total_flops()
        for op, n in counter.get_flop_counts().get("Global", {}).items():
            by_op[str(op)] = by_op.get(str(op), 0) + n
        start = time.perf_counter()
        trainer.training_step(step)  # the same batch again, timed without the counter
        seconds += time.perf_counter() - start
    step_s, step_flops = seconds / steps, flops / steps
    return {"step_flops": step_flops, "step_flops_by_op": {k: v / steps for k, v in by_op.items()}, "step_s": step_s,
            "steps_timed": steps, "achieved_flops_per_s": step_flops / step_s}


def child_mfu(a: argparse.Namespace) -> dict:
    import torch

    from dr.models.precision import resolve_precision

    dtype = torch.float32 if a.precision == "fp32" else torch.bfloat16
    record = {"threads": torch.get_num_threads(), "matmul_dtype": str(dtype).replace("torch.", ""),
              **matmul_peak(dtype, a.matmul_sizes, a.matmul_repeats)}
    resolved = resolve_precision(a.precision, "cpu", "training")
    total = a.warmup + a.steps
    trainer = build_dr_trainer(a.batch_size, 2 * total, a.query_max_length, a.passage_max_length,
                               precision_overrides(a.precision))
    trainer.model.train()
    linears = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear)]
    widest = max(linears, key=lambda m: m.in_features * m.out_features)
    rows = a.batch_size * 2 * a.passage_max_length  # the passages of one step at full length
    shape = (rows, widest.in_features, widest.out_features)
    record["model_shape"] = list(shape)
    record["model_shape_flops_per_s"], _ = best_rate(torch.randn(rows, shape[1], dtype=dtype),
                                                     torch.randn(shape[1], shape[2], dtype=dtype), a.matmul_repeats)
    record["trainable_params"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    record["settings"] = dr_settings(trainer)
    if a.precision == "auto" and resolved.name == "fp32":
        record["step"] = {"same_as": "fp32", "precision": "fp32", "reason": resolved.reason}
        return record
    record["step"] = {"precision": resolved.name, "reason": resolved.reason,
                      **step_flops_and_time(trainer, a.warmup, a.steps)}
    if a.precision == "fp32":
        record["step"]["mfu"] = mfu(record["step"]["step_flops"], record["step"]["step_s"], record["peak_flops_per_s"])
    return record


def child_profile(a: argparse.Namespace) -> dict:
    from torch.profiler import ProfilerActivity, profile

    trainer = build_dr_trainer(a.batch_size, a.warmup + 1, a.query_max_length, a.passage_max_length,
                               precision_overrides(a.precision))
    trainer.model.train()
    for step in range(a.warmup):
        trainer.training_step(step)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        trainer.training_step(a.warmup)
        wall = time.perf_counter() - start
    events = [(e.key, e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()]  # ms
    total = sum(ms for _, ms, _ in events)
    ranked = sorted(events, key=lambda e: -e[1])
    matmul = sum(ms for name, ms, _ in events if is_matmul(name))
    return {"settings": dr_settings(trainer), "warmup_steps": a.warmup, "step_wall_s": wall,
            "self_cpu_total_ms": total, "operators": len(events),
            "top": [{"name": n, "self_cpu_ms": ms, "share": ms / total, "calls": c} for n, ms, c in ranked[:a.top]],
            "matmul_ms": matmul, "matmul_share": matmul / total if total else 0.0,
            "matmul_ops": [*MATMUL_OPS, *(p + "*" for p in MATMUL_PREFIXES)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["mfu", "profile"])
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--query-max-length", type=int, default=64)
    ap.add_argument("--passage-max-length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="mfu: steps counted and timed")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--matmul-sizes", type=int, nargs="+", default=[2048, 3072, 4096])
    ap.add_argument("--matmul-repeats", type=int, default=3)
    ap.add_argument("--top", type=int, default=15, help="profile: operators listed")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    record = child_mfu(a) if a.what == "mfu" else child_profile(a)
    print("RESULT " + json.dumps(record))
    if a.out:
        a.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
