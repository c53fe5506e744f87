"""`make bench`: dr's speed against the reference tools and this machine's own limits, written to the
generated block of docs/BENCHMARKS.md and to docs/bench/bench.json.

    python scripts/bench.py                               # every section (estimated 15 minutes on 2 CPU cores)
    python scripts/bench.py --refresh-passages 1000       # the miner refresh extrapolated from 1,000 passages
    python scripts/bench.py --skip train,memory           # leave sections out
    python scripts/bench.py --quick                       # tiny sizes, to check the pipeline (outputs/bench-quick/)

Sections, each in its own process(es), one after the other (never two at a time):
  train   training throughput, dr vs sentence-transformers' trainer (scripts/bench_train.py)
  encode  corpus encoding throughput, dr vs SentenceTransformer.encode (scripts/bench_encode.py)
  mfu     this machine's fp32 matmul FLOP/s and the FLOP/s a dr training step achieves (model FLOP
          utilization); the step's FLOPs are counted by torch.utils.flop_counter.FlopCounterMode
  refresh the dynamic miner's refresh overhead at the schedule of +experiment=ance
  memory  the miner's memory and search time at 1M vectors (scripts/miner_scale.py)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dr.docs import describe_machine, format_duration, invocation, machine, today, write_block

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
SECTIONS = ("train", "encode", "mfu", "refresh", "memory")
TARGETS = {"train": 1.2, "encode": 1.0, "mfu": 0.5}  # issue 8: dr/ST training, dr/ST encoding, MFU
BLOCK = "bench"


@dataclass(frozen=True)
class Sizes:
    """How much each section measures. The defaults are `make bench`'s; `QUICK` checks the pipeline."""

    batch_size: int = 16  # training: queries per step, each with a positive and a BM25 negative
    query_len: int = 64
    passage_len: int = 256
    train_steps: int = 5
    train_warmup: int = 1
    encode_n: int = 512
    encode_batch: int = 64
    encode_len: int = 256
    matmul_sizes: tuple[int, ...] = (2048, 3072, 4096)
    matmul_repeats: int = 3
    mfu_steps: int = 3
    mfu_warmup: int = 1
    refresh_passages: int | None = None  # None: the whole corpus (no extrapolation)
    refresh_queries: int | None = None  # None: every training query
    scale_passages: int = 1_000_000
    scale_dim: int = 384
    scale_queries: int = 729
    scale_depth: int = 200
    scale_shards: tuple[int, ...] = (1, 2)


QUICK = Sizes(batch_size=2, query_len=16, passage_len=32, train_steps=1, train_warmup=1, encode_n=16, encode_batch=8,
              encode_len=32, matmul_sizes=(256, 512), matmul_repeats=2, mfu_steps=1, mfu_warmup=1,
              refresh_passages=32, refresh_queries=16, scale_passages=20_000, scale_queries=64, scale_depth=20)


# ------------------------------------------------------------------------------------------ arithmetic


def matmul_flops(m: int, k: int, n: int) -> float:
    """FLOPs of an (m, k) x (k, n) matrix product: one multiply and one add per term."""
    return 2.0 * m * k * n


def mfu(step_flops: float, step_s: float, peak_flops_per_s: float) -> float:
    """Model FLOP utilization: the FLOP/s a step achieves (its FLOPs over its seconds) over the peak."""
    if step_s <= 0 or peak_flops_per_s <= 0:
        raise ValueError(f"step time and peak must be > 0, got {step_s} s and {peak_flops_per_s} FLOP/s")
    return step_flops / step_s / peak_flops_per_s


def count_refreshes(refresh_every: int, max_steps: int) -> int:
    """Refreshes in a run of `max_steps` steps: before step 0 and every `refresh_every` steps after
    (`dr.mining.miner.MinerConfig.due`); 0 means once (a static miner)."""
    from dr.mining.miner import MinerConfig

    config, last, count = MinerConfig(refresh_every=refresh_every), None, 0
    for step in range(max_steps):
        if config.due(step, last):
            count, last = count + 1, step
    return count


def refresh_overhead(refreshes: int, refresh_s: float, steps: int, step_s: float) -> float:
    """Share of a training run's loop spent refreshing: R r / (R r + S s)."""
    total = refreshes * refresh_s + steps * step_s
    return refreshes * refresh_s / total if total > 0 else 0.0


# ------------------------------------------------------------------------------------------ children


def child_mfu(sizes: Sizes) -> dict:
    """The best fp32 matmul FLOP/s over square sizes, the model's largest matmul shape, and dr training
    steps: each measured step is run once under FlopCounterMode (its FLOPs) and once more, with the same
    batch, timed (the counter's dispatch overhead stays out of the time)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench_train import build_dr_trainer

    def best_rate(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
        out = torch.empty(a.shape[0], b.shape[1])
        torch.mm(a, b, out=out)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - start)
        return matmul_flops(a.shape[0], a.shape[1], b.shape[1]) / best

    torch.manual_seed(0)
    square = {n: best_rate(torch.randn(n, n), torch.randn(n, n), sizes.matmul_repeats) for n in sizes.matmul_sizes}
    peak = max(square.values())

    total = sizes.mfu_warmup + sizes.mfu_steps
    trainer = build_dr_trainer(sizes.batch_size, 2 * total, sizes.query_len, sizes.passage_len)
    trainer.model.train()
    linears = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear)]
    widest = max(linears, key=lambda m: m.in_features * m.out_features)
    rows = sizes.batch_size * 2 * sizes.passage_len  # the passages of one step at full length
    shape = (rows, widest.in_features, widest.out_features)
    shape_rate = best_rate(torch.randn(rows, shape[1]), torch.randn(shape[1], shape[2]), sizes.matmul_repeats)
    params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    for step in range(sizes.mfu_warmup):
        trainer.training_step(step)
    flops, seconds, by_op = 0.0, 0.0, {}
    for step in range(sizes.mfu_warmup, total):
        with FlopCounterMode(display=False) as counter:
            trainer.training_step(step)
        flops += counter.get_total_flops()
        for op, n in counter.get_flop_counts().get("Global", {}).items():
            by_op[str(op)] = by_op.get(str(op), 0) + n
        start = time.perf_counter()
        trainer.training_step(step)
        seconds += time.perf_counter() - start
    step_s, step_flops = seconds / sizes.mfu_steps, flops / sizes.mfu_steps
    return {
        "threads": torch.get_num_threads(), "matmul_flops_per_s": {str(n): r for n, r in square.items()},
        "peak_flops_per_s": peak, "model_shape": list(shape), "model_shape_flops_per_s": shape_rate,
        "trainable_params": params, "step_flops": step_flops, "step_flops_by_op": {k: v / sizes.mfu_steps
                                                                                 for k, v in by_op.items()},
        "step_s": step_s, "steps_timed": sizes.mfu_steps, "achieved_flops_per_s": step_flops / step_s,
        "mfu": mfu(step_flops, step_s, peak),
    }


def child_refresh(sizes: Sizes) -> dict:
    """One refresh of the dynamic miner at +experiment=ance's settings with the starting model: the whole
    corpus through `Miner.refresh` (no embedding cache), or with `refresh_passages` / `refresh_queries` a
    seeded sample encoded and the encoding times scaled to the full counts, then the exact search of all
    the queries against a corpus-sized array."""
    import numpy as np
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from dr.config import CONFIG_DIR, register_resolvers
    from dr.data.groups import split_dev
    from dr.mining.miner import Miner, passage_length, search_shard
    from dr.models.dual_encoder import DualEncoder

    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=ance"])
    miner_cfg = instantiate(cfg.miner, _convert_="all")
    tcfg = instantiate(cfg.trainer, _convert_="all")
    encoder_cfg = dataclasses.replace(instantiate(cfg.model, _convert_="all"), show_progress=False)
    train_set = instantiate(cfg.data.train, _convert_="all")
    qids, _ = split_dev(train_set, tcfg.dev_queries, tcfg.seed)
    encoder = DualEncoder(encoder_cfg).eval()
    corpus_rows = train_set.corpus.active_rows
    n_passages, n_queries = len(corpus_rows), len(qids)
    record = {"refresh_every": miner_cfg.refresh_every, "max_steps": tcfg.max_steps,
              "refreshes": count_refreshes(miner_cfg.refresh_every, tcfg.max_steps),
              "miner_passage_len": miner_cfg.passage_max_length, "depth": miner_cfg.depth,
              "index": miner_cfg.index.factory, "corpus_passages": n_passages, "queries": n_queries,
              "batch_size": tcfg.batch_size, "negatives_per_query": tcfg.negatives_per_query,
              "query_len": encoder_cfg.query_max_length, "passage_len": encoder_cfg.passage_max_length}
    sample_p = sizes.refresh_passages if sizes.refresh_passages and sizes.refresh_passages < n_passages else None
    sample_q = sizes.refresh_queries if sizes.refresh_queries and sizes.refresh_queries < n_queries else None
    if sample_p is None and sample_q is None:
        _, stats = Miner(miner_cfg, cache=None).refresh(encoder, train_set, qids, step=0, version=0)
        return {**record, "extrapolated": False, "encoded_passages": stats.passages, "encode_s": stats.encode_s,
                "query_s": stats.query_s, "search_s": stats.index_s + stats.search_s, "refresh_s": stats.total_s}
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(corpus_rows, sample_p, replace=False)) if sample_p else corpus_rows
    some_qids = [qids[i] for i in sorted(rng.choice(n_queries, sample_q, replace=False))] if sample_q else qids
    with passage_length(encoder, miner_cfg.passage_max_length):
        start = time.perf_counter()
        emb = encoder.encode_passages(train_set.corpus.texts(rows))
        encode_s = (time.perf_counter() - start) * n_passages / len(rows)
    start = time.perf_counter()
    q = encoder.encode_queries([train_set.queries[x] for x in some_qids])
    query_s = (time.perf_counter() - start) * n_queries / len(some_qids)
    full_emb, full_q = np.resize(emb, (n_passages, emb.shape[1])), np.resize(q, (n_queries, q.shape[1]))
    _, _, index_s, search_s = search_shard(full_emb, corpus_rows, full_q, miner_cfg.depth, miner_cfg.index)
    return {**record, "extrapolated": True, "encoded_passages": len(rows), "encoded_queries": len(some_qids),
            "encode_s": encode_s, "query_s": query_s, "search_s": index_s + search_s,
            "refresh_s": encode_s + query_s + index_s + search_s}


# ------------------------------------------------------------------------------------------ the parent


def run_child(cmd: list[str], env: dict | None = None) -> tuple[dict, float]:
    """Run one measuring process; (its RESULT record, wall seconds). RuntimeError with its stderr tail."""
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    wall = time.perf_counter() - start
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{shlex.join(cmd)} exited with code {out.returncode}:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):]), wall


def _script_json(cmd: list[str], out: Path) -> dict:
    """Run a benchmark script that writes its record to `out` (`--out`)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{shlex.join(cmd)} exited with code {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def measure(section: str, sizes: Sizes, tmp: Path) -> dict:
    """One section's record, each comparison in its own process(es)."""
    py = sys.executable
    if section == "train":
        out = tmp / "train.json"
        args = ["--steps", str(sizes.train_steps), "--warmup", str(sizes.train_warmup), "--batch-size",
                str(sizes.batch_size), "--query-max-length", str(sizes.query_len), "--passage-max-length",
                str(sizes.passage_len)]
        return {**_script_json([py, str(SCRIPTS / "bench_train.py"), *args, "--out", str(out)], out),
                "command": shlex.join(["python", "scripts/bench_train.py", *args])}
    if section == "encode":
        out = tmp / "encode.json"
        args = ["--n", str(sizes.encode_n), "--batch-size", str(sizes.encode_batch), "--max-length",
                str(sizes.encode_len)]
        return {**_script_json([py, str(SCRIPTS / "bench_encode.py"), *args, "--out", str(out)], out),
                "command": shlex.join(["python", "scripts/bench_encode.py", *args])}
    if section in ("mfu", "refresh"):
        record, _ = run_child([py, __file__, "--child", section, "--sizes", json.dumps(dataclasses.asdict(sizes))])
        return record
    if section == "memory":
        args = ["--passages", str(sizes.scale_passages), "--dim", str(sizes.scale_dim), "--queries",
                str(sizes.scale_queries), "--depth", str(sizes.scale_depth), "--shards", *map(str, sizes.scale_shards)]
        proc = subprocess.run([py, str(SCRIPTS / "miner_scale.py"), *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"miner_scale.py exited with code {proc.returncode}:\n{proc.stderr[-3000:]}")
        configs = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
        return {"configs": configs, "command": shlex.join(["python", "scripts/miner_scale.py", *args])}
    raise ValueError(f"unknown section {section!r}; known: {', '.join(SECTIONS)}")


def finish(record: dict) -> dict:
    """Derived figures that need several sections: the refresh overhead takes its step time from the
    MFU section's dr step (else the training section's)."""
    sections = record["sections"]
    refresh = sections.get("refresh", {})
    if "refresh_s" in refresh:
        step = None
        if "step_s" in sections.get("mfu", {}):
            step = (sections["mfu"]["step_s"], "the dr training step timed in the MFU section")
        elif "dr" in sections.get("train", {}):
            step = (sections["train"]["dr"]["s_per_step"], "dr's step in the training section")
        if step is not None:
            sizes = record.get("sizes", {})
            same = (sizes.get("batch_size"), sizes.get("query_len"), sizes.get("passage_len")) == (
                refresh.get("batch_size"), refresh.get("query_len"), refresh.get("passage_len")) \
                and refresh.get("negatives_per_query") == 1  # the bench step: one BM25 negative per query
            shape = (f"{sizes.get('batch_size')} queries x (1 positive + 1 negative), {sizes.get('query_len')}/"
                     f"{sizes.get('passage_len')} tokens: " + ("the shape of an ance step" if same else
                                                               "NOT the shape of an ance step"))
            step = (step[0], f"{step[1]}; {shape}")
            refresh["step_s"], refresh["step_source"] = step
            refresh["overhead"] = refresh_overhead(refresh["refreshes"], refresh["refresh_s"], refresh["max_steps"],
                                                   step[0])
    return record


# ------------------------------------------------------------------------------------------ markdown


def _gflops(x: float) -> str:
    return f"{x / 1e9:,.1f} GFLOP/s"


def _verdict(value: float, target: float, fmt: str) -> str:
    return f"**{fmt.format(value)}** (target >= {fmt.format(target)}: {'met' if value >= target else 'not met'})"


def _section_error(name: str, data: dict) -> str | None:
    if data.get("skipped"):
        return f"Not measured in this run (`--skip {name}`)."
    if "error" in data:
        return f"Failed in this run: `{data['error'].splitlines()[0]}` (full message in the JSON record)."
    return None


def render_train(d: dict) -> list[str]:
    ratio = d["ratio_dr_over_st"]
    lines = [
        f"Same model (all-MiniLM-L6-v2, fp32), {d['batch_size']} SciFact training queries a step, each with its "
        f"positive and top BM25 negative, query length {d['query_max_length']}, passage length "
        f"{d['passage_max_length']}, AdamW lr 2e-5, clip 1.0; {d['warmup_steps']} warm-up step(s), then "
        f"{d['steps_timed']} timed. dr: `Trainer.training_step`; sentence-transformers: `SentenceTransformerTrainer` "
        "with `MultipleNegativesRankingLoss`.", "",
        "| tool | queries/s | s/step |", "|---|---|---|",
        f"| dr | {d['dr']['queries_per_s']:.3f} | {d['dr']['s_per_step']:.2f} |",
        f"| sentence-transformers trainer + MNRL | {d['sentence_transformers']['queries_per_s']:.3f} | "
        f"{d['sentence_transformers']['s_per_step']:.2f} |",
        f"| ratio dr / sentence-transformers | {_verdict(ratio, TARGETS['train'], '{:.2f}')} | |", "",
        f"    {d['command']}",
    ]
    step_s = d["dr"]["s_per_step"]
    if 0.9 <= ratio < TARGETS["train"]:
        lines += ["", "Short of the 1.2x target. Both tools push the same model, the same number of queries and "
                  "passages at the same maximum lengths through the same torch fp32 kernels for the forward pass, "
                  "backward pass and AdamW; they differ in per-step bookkeeping (batching, collation, logging, "
                  f"callbacks), a small part of a {step_s:.1f} s step. On a CPU bound by matrix multiplies, 1.2x "
                  "needs less arithmetic per query (lower-precision matmuls on a CPU that has them, shorter "
                  "padded passages), not a faster loop; the model FLOP utilization below shows how close the "
                  "step is to the machine's matmul rate."]
    elif ratio < 0.9:
        lines += ["", "Below parity by more than per-step bookkeeping explains (both run the same model through the "
                  "same torch kernels at the same batch and lengths); rerun `python scripts/bench_train.py` with "
                  "more `--steps` on a quiet machine before reading more into it."]
    return lines


def render_encode(d: dict) -> list[str]:
    ratio = d["ratio_dr_over_st"]
    lines = [
        f"Same model (all-MiniLM-L6-v2, fp32), the {d['texts']}, batch {d['batch_size']}, max length "
        f"{d['max_length']}, one warm-up batch excluded.", "",
        "| tool | passages/s | seconds |", "|---|---|---|",
        f"| dr `DualEncoder.encode_passages` | {d['dr']['passages_per_s']:.2f} | {d['dr']['seconds']:.1f} |",
        f"| sentence-transformers `SentenceTransformer.encode` | {d['sentence_transformers']['passages_per_s']:.2f} | "
        f"{d['sentence_transformers']['seconds']:.1f} |",
        f"| ratio dr / sentence-transformers | {_verdict(ratio, TARGETS['encode'], '{:.2f}')} | |", "",
        f"    {d['command']}",
    ]
    if 0.9 <= ratio < TARGETS["encode"]:
        lines += ["", "Below the 1.0 target. Both sort the texts by length and pad each batch to its longest text, "
                  "then run the same forward pass; the arithmetic is the same, so the gap is per-batch overhead "
                  "(tokenization, pooling, copies) or timing noise of one pass."]
    elif ratio < 0.9:
        lines += ["", "Below the 1.0 target by more than per-batch overhead explains (both run the same forward "
                  "pass on length-sorted batches); rerun `python scripts/bench_encode.py` on a quiet machine "
                  "before reading more into it."]
    return lines


def render_mfu(d: dict, machine_info: dict) -> list[str]:
    m, k, n = d["model_shape"]
    shape_share = d["model_shape_flops_per_s"] / d["peak_flops_per_s"]
    square = ", ".join(f"{int(s):,}: {_gflops(r)}" for s, r in d["matmul_flops_per_s"].items())
    ops = ", ".join(f"{op.replace('aten.', '')} {v / d['step_flops']:.0%}" for op, v in
                    sorted(d["step_flops_by_op"].items(), key=lambda kv: -kv[1]))
    lines = [
        f"Peak: the best of {len(d['matmul_flops_per_s'])} square fp32 `torch.mm` sizes ({square}), "
        f"{d['threads']} torch threads. Step: dr's training step of the training section's shape, its FLOPs "
        "counted by `torch.utils.flop_counter.FlopCounterMode` (forward and backward matmuls and attention: "
        f"{ops}), the same batch timed again without the counter, mean of {d['steps_timed']} step(s).", "",
        "| quantity | value |", "|---|---|",
        f"| machine fp32 matmul peak | {_gflops(d['peak_flops_per_s'])} |",
        f"| the model's widest matmul, ({m:,} x {k}) x ({k} x {n}) | {_gflops(d['model_shape_flops_per_s'])} "
        f"({shape_share:.0%} of peak) |",
        f"| FLOPs of one dr training step | {d['step_flops'] / 1e9:,.1f} GFLOP |",
        f"| step time | {d['step_s']:.2f} s |",
        f"| achieved | {_gflops(d['achieved_flops_per_s'])} |",
        f"| model FLOP utilization | {_verdict(d['mfu'], TARGETS['mfu'], '{:.0%}')} |",
    ]
    if d["mfu"] < TARGETS["mfu"]:
        simd = ", ".join(machine_info.get("simd") or []) or "none detected"
        why = (f"The model is narrow (hidden {k}): its widest matmul runs at only {shape_share:.0%} of the "
               "square-matmul peak on this machine, which bounds MFU, and attention works on much smaller per-head "
               "matrices. " if shape_share < 0.8 else
               f"The model's widest matmul runs at {shape_share:.0%} of the square-matmul peak, so the gap is not "
               "in the big matmuls: attention works on much smaller per-head matrices, and ")
        lines += ["", f"Short of the 50% target. {why}"
                  + ("The" if shape_share < 0.8 else "the") + " rest of the step (softmax, GELU, LayerNorm, "
                  "tokenization, gradient clipping, AdamW over "
                  f"{d['trainable_params'] / 1e6:.1f}M parameters) takes time without matmul FLOPs. What would "
                  "close it: lower-precision matmuls where the CPU has them (bf16 needs AVX512-BF16 or AMX; this "
                  f"CPU's SIMD flags: {simd}), fusing the non-matmul work, or a wider model whose matmuls run "
                  "nearer the peak."]
    return lines


def render_refresh(d: dict) -> list[str]:
    share = d["encode_s"] / d["refresh_s"] if d["refresh_s"] else 0.0
    how = (f"extrapolated: {d['encoded_passages']:,} sampled passages"
           + (f" and {d['encoded_queries']} sampled queries" if "encoded_queries" in d else "")
           + " encoded, times scaled to the full counts; search on a corpus-sized array") if d["extrapolated"] \
        else "measured: the whole corpus through `Miner.refresh`, no embedding cache"
    lines = [
        f"Schedule of `+experiment=ance` (configs/miner/dynamic.yaml, configs/trainer/cpu.yaml): a refresh before "
        f"step 0 and every {d['refresh_every']} steps of {d['max_steps']}, so {d['refreshes']} refreshes, each "
        f"encoding the {d['corpus_passages']:,} SciFact passages at {d['miner_passage_len']} tokens and the "
        f"{d['queries']} training queries, then an exact top-{d['depth']} search ({d['index']}). One refresh with "
        f"the starting model ({how}):", "",
        "| quantity | value |", "|---|---|",
        f"| encode corpus | {d['encode_s']:.1f} s ({d['corpus_passages'] / d['encode_s']:.1f} passages/s) |",
        f"| encode queries | {d['query_s']:.1f} s |",
        f"| index + search | {d['search_s']:.2f} s |",
        f"| one refresh | {d['refresh_s']:.1f} s |",
    ]
    if "overhead" in d:
        r, s = d["refreshes"] * d["refresh_s"], d["max_steps"] * d["step_s"]
        lines += [f"| training step ({d['step_source']}) | {d['step_s']:.2f} s |",
                  f"| overhead = {d['refreshes']} x refresh / ({d['refreshes']} x refresh + {d['max_steps']} x step) | "
                  f"**{d['overhead']:.0%}** ({r:.0f} s of {r + s:.0f} s) |"]
    else:
        lines.append("| overhead | not computed: it needs the step time of the mfu or train section |")
    lines += ["", f"Encoding the corpus is {share:.0%} of a refresh. What lowers the overhead: fewer refreshes "
              "(`miner.refresh_every`; ANCE refreshes every ~10k steps), a shorter encoding length "
              "(`miner.passage_max_length`), or a GPU, where the same encoding takes seconds."]
    return lines


def render_memory(d: dict) -> list[str]:
    lines = ["| passages x dim | processes (shards) | embeddings per process | peak RSS per process | "
             "search | ms/query | merge |", "|---|---|---|---|---|---|---|"]
    for c in d["configs"]:
        lines.append(f"| {c['passages']:,} x {c['dim']} | {c['shards']} | {c['embeddings_mb'] / c['shards']:,.0f} MB | "
                     f"{c['peak_rss_mb']:,.0f} MB | {c['search_s']:.1f} s ({c['queries']} queries, top "
                     f"{c['depth']}{', all shards' if c['shards'] > 1 else ''}) | {c['search_ms_per_query']:.1f} | "
                     f"{c['merge_s']:.2f} s |")
    return lines + ["", "Synthetic float32 vectors, exact inner-product search, each configuration in a fresh "
                    "process; with several shards they run one after the other here and the peak is the largest "
                    "shard's (what one process of that many holds).", "", f"    {d['command']}"]


def render(record: dict) -> str:
    """The generated block of docs/BENCHMARKS.md from a bench.json record."""
    sections, info = record["sections"], record["machine"]
    lines = [
        "<!-- generated by scripts/bench.py (make bench): edit the script, not this block -->",
        "## Measured by `make bench`", "",
        f"Generated {record['date']} by `{record['command']}` in {format_duration(record['wall_s'])}"
        + (" (**quick sizes**: a pipeline check, not a benchmark)" if record.get("quick") else "")
        + f". Machine: {describe_machine(info)}. Load average before and after: "
        f"{record['load_before']} / {record['load_after']}. Every comparison ran in its own processes, one "
        "after the other; ratios are dr / reference (higher is better). "
        f"Raw figures: {record.get('json', 'bench.json')}.",
    ]
    titles = {"train": "Training throughput", "encode": "Corpus encoding throughput",
              "mfu": "Model FLOP utilization", "refresh": "Miner refresh overhead at the default schedule",
              "memory": "Miner memory at 1M vectors"}
    renderers = {"train": render_train, "encode": render_encode, "mfu": lambda d: render_mfu(d, info),
                 "refresh": render_refresh, "memory": render_memory}
    for name in SECTIONS:
        data = sections.get(name, {"skipped": True})
        lines += ["", f"### {titles[name]}", ""]
        error = _section_error(name, data)
        lines += [error] if error else renderers[name](data)
        if not error and "wall_s" in data:
            lines += ["", f"Section wall time: {format_duration(data['wall_s'])}."]
    return "\n".join(lines)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: how busy the machine was around the measurements."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a pipeline check); writes under "
                        "outputs/bench-quick/ unless --out-md/--out-json say otherwise")
    parser.add_argument("--skip", default="", help=f"comma-separated sections to leave out: {','.join(SECTIONS)}")
    parser.add_argument("--refresh-passages", type=int, default=None,
                        help="encode this many sampled passages in the refresh section and extrapolate (default: all)")
    parser.add_argument("--out-md", type=Path, default=None, help="default docs/BENCHMARKS.md")
    parser.add_argument("--out-json", type=Path, default=None, help="default docs/bench/bench.json")
    parser.add_argument("--child", choices=["mfu", "refresh"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        raw = json.loads(args.sizes)
        sizes = Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        print("RESULT " + json.dumps(child_mfu(sizes) if args.child == "mfu" else child_refresh(sizes)))
        return 0
    skip = [s for s in args.skip.split(",") if s]
    unknown = [s for s in skip if s not in SECTIONS]
    if unknown:
        parser.error(f"--skip: unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    sizes = QUICK if args.quick else Sizes()
    if args.refresh_passages is not None:
        sizes = dataclasses.replace(sizes, refresh_passages=args.refresh_passages)
    default_dir = ROOT / "outputs" / "bench-quick" if args.quick else ROOT / "docs"
    out_md = args.out_md or default_dir / "BENCHMARKS.md"
    out_json = args.out_json or (default_dir / "bench.json" if args.quick else ROOT / "docs" / "bench" / "bench.json")
    command = invocation("scripts/bench.py", argv if argv is not None else sys.argv[1:], "bench")
    start = time.perf_counter()
    shown_json = os.path.relpath(out_json, ROOT) if out_json.resolve().is_relative_to(ROOT) else str(out_json)
    record = {"date": today(), "command": command, "json": shown_json, "quick": args.quick,
              "sizes": dataclasses.asdict(sizes), "machine": machine(), "load_before": load_average(), "sections": {}}
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in SECTIONS:
            if name in skip:
                record["sections"][name] = {"skipped": True}
                continue
            print(f"[bench] {name} ...", flush=True)
            section_start = time.perf_counter()
            try:
                data = measure(name, sizes, Path(tmp))
            except RuntimeError as e:
                data, failed = {"error": str(e)}, failed + [name]
                print(f"[bench] {name} failed: {e}", file=sys.stderr)
            data["wall_s"] = time.perf_counter() - section_start
            record["sections"][name] = data
            print(f"[bench] {name} done in {format_duration(data['wall_s'])}", flush=True)
    record["wall_s"] = time.perf_counter() - start
    record["load_after"] = load_average()
    finish(record)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(record, indent=2) + "\n")
    text = render(record)
    print(text)
    print(f"json: {out_json}")
    if failed:
        print(f"error: section(s) {', '.join(failed)} failed; {out_md} was left as it was", file=sys.stderr)
        return 1
    print(f"markdown: {write_block(out_md, BLOCK, text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
