"""`make bench`: dr's speed against the reference tools and this machine's own limits, written to the
generated block of docs/BENCHMARKS.md and to docs/bench/bench.json.

    python scripts/bench.py                               # every section (about 15-20 minutes on 2 CPU cores)
    python scripts/bench.py --refresh-passages 1000       # the miner refresh extrapolated from 1,000 passages
    python scripts/bench.py --skip train,memory           # leave sections out
    python scripts/bench.py --quick                       # tiny sizes, to check the pipeline (outputs/bench-quick/)

Sections, each in its own process(es), one after the other (never two at a time):
  train    training throughput, dr vs sentence-transformers' trainer, both fp32, each at its defaults,
           both bf16 where the CPU has native bf16 (scripts/bench_train.py)
  encode   corpus encoding throughput, dr vs SentenceTransformer.encode, both fp32 and each at its defaults
           (scripts/bench_encode.py)
  mfu      this machine's fp32 and bf16 matmul FLOP/s and the FLOP/s dr's fp32 and default training steps
           achieve (model FLOP utilization), FLOPs counted by FlopCounterMode (scripts/bench_step.py mfu)
  padding  padded vs padding-free forward + backward on MS MARCO passages (scripts/bench_padding.py)
  profile  the top operators of one default dr training step (scripts/bench_step.py profile)
  refresh  the dynamic miner's refresh overhead at the schedule of +experiment=ance
  memory   the miner's memory and search time at 1M vectors (scripts/miner_scale.py)

Every child process gets this environment without DR_NATIVE_BF16 (a test run's override of the bf16 probe),
so `auto` precision is what the CPU itself supports.
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

from bench_report import SECTIONS, render
from dr.docs import format_duration, invocation, machine, today, write_block

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
BLOCK = "bench"
DROPPED_ENV = ("DR_NATIVE_BF16",)  # overrides of the hardware probe that a benchmark must not inherit


@dataclass(frozen=True)
class Sizes:
    """How much each section measures. The defaults are `make bench`'s; `QUICK` checks the pipeline."""

    batch_size: int = 16  # training: queries per step, each with a positive and a BM25 negative
    query_len: int = 64
    passage_len: int = 256
    train_steps: int = 5
    train_warmup: int = 1
    train_comparisons: str = "fp32,defaults,bf16,fp32_st_allocator"  # scripts/bench_train.py --comparisons
    encode_n: int = 512
    encode_batch: int = 64
    encode_len: int = 256
    matmul_sizes: tuple[int, ...] = (2048, 3072, 4096)
    matmul_repeats: int = 3
    mfu_steps: int = 3
    mfu_warmup: int = 1
    padding_batch: int = 32  # passages a step: dr's training step has 16 queries x 2 passages
    padding_len: int = 256
    padding_steps: int = 3
    padding_warmup: int = 1
    padding_check_batches: int = 2
    profile_warmup: int = 1
    profile_top: int = 15
    refresh_passages: int | None = None  # None: the whole corpus (no extrapolation)
    refresh_queries: int | None = None  # None: every training query
    scale_passages: int = 1_000_000
    scale_dim: int = 384
    scale_queries: int = 729
    scale_depth: int = 200
    scale_shards: tuple[int, ...] = (1, 2)


QUICK = Sizes(batch_size=2, query_len=16, passage_len=32, train_steps=1, train_warmup=1, encode_n=16, encode_batch=8,
              encode_len=32, matmul_sizes=(256, 512), matmul_repeats=2, mfu_steps=1, mfu_warmup=1,
              padding_batch=4, padding_len=256, padding_steps=1, padding_warmup=1, padding_check_batches=1,
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
    from dr.index import search_blocks
    from dr.mining.miner import Miner, passage_length
    from dr.models.dual_encoder import DualEncoder
    from dr.runtime import configure_allocator

    configure_allocator()  # as in dr.train, whose miner this times
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
    start = time.perf_counter()
    search_blocks(full_q, lambda: [(corpus_rows, full_emb)], len(corpus_rows), miner_cfg.depth, miner_cfg.index)
    index_s, search_s = 0.0, time.perf_counter() - start
    return {**record, "extrapolated": True, "encoded_passages": len(rows), "encoded_queries": len(some_qids),
            "encode_s": encode_s, "query_s": query_s, "search_s": index_s + search_s,
            "refresh_s": encode_s + query_s + index_s + search_s}


# ------------------------------------------------------------------------------------------ the parent


def child_env() -> dict[str, str]:
    """The environment of every measuring process: this one's, offline, without DROPPED_ENV."""
    return {**{k: v for k, v in os.environ.items() if k not in DROPPED_ENV}, "HF_HUB_OFFLINE": "1"}


def run_child(cmd: list[str]) -> tuple[dict, float]:
    """Run one measuring process; (its RESULT record, wall seconds). RuntimeError with its stderr tail."""
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
    wall = time.perf_counter() - start
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{shlex.join(cmd)} exited with code {out.returncode}:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):]), wall


def _script_json(script: str, args: list[str], out: Path) -> dict:
    """Run scripts/`script` with `args`, which writes its record to `out` (`--out`); the record and the
    command as the doc shows it."""
    cmd = [sys.executable, str(SCRIPTS / script), *args, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{shlex.join(cmd)} exited with code {proc.returncode}:\n{proc.stderr[-3000:]}")
    return {**json.loads(out.read_text()), "command": shlex.join(["python", f"scripts/{script}", *args])}


def step_args(sizes: Sizes) -> list[str]:
    """The training step's shape, as scripts/bench_train.py and scripts/bench_step.py take it."""
    return ["--batch-size", str(sizes.batch_size), "--query-max-length", str(sizes.query_len),
            "--passage-max-length", str(sizes.passage_len)]


def measure_mfu(sizes: Sizes, tmp: Path) -> dict:
    """The fp32 peak and step, then the bf16 peak and the default step, each in its own process."""
    common = [*step_args(sizes), "--steps", str(sizes.mfu_steps), "--warmup", str(sizes.mfu_warmup),
              "--matmul-sizes", *map(str, sizes.matmul_sizes), "--matmul-repeats", str(sizes.matmul_repeats)]
    runs = {p: _script_json("bench_step.py", ["mfu", "--precision", p, *common], tmp / f"mfu-{p}.json")
            for p in ("fp32", "auto")}
    fp32, auto = runs["fp32"], runs["auto"]
    peaks = {r["matmul_dtype"].replace("float32", "fp32").replace("bfloat16", "bf16"): {
        k: r[k] for k in ("matmul_flops_per_s", "peak_flops_per_s", "model_shape_flops_per_s")} for r in runs.values()}
    default = auto["step"] if "same_as" not in auto["step"] else {**fp32["step"], "same_as_fp32": True,
                                                                  "reason": auto["step"]["reason"]}
    default = {**default, "of_fp32_peak": default["achieved_flops_per_s"] / peaks["fp32"]["peak_flops_per_s"],
               "of_bf16_peak": default["achieved_flops_per_s"] / peaks["bf16"]["peak_flops_per_s"]}
    return {"threads": fp32["threads"], "model_shape": fp32["model_shape"],
            "trainable_params": fp32["trainable_params"],
            "settings": {"fp32": fp32["settings"], "default": auto["settings"]}, "peaks": peaks,
            "steps": {"fp32": fp32["step"], "default": default}, "mfu": default["of_fp32_peak"],
            "commands": [fp32["command"], auto["command"]]}


def measure(section: str, sizes: Sizes, tmp: Path) -> dict:
    """One section's record, each comparison in its own process(es)."""
    if section == "train":
        args = ["--steps", str(sizes.train_steps), "--warmup", str(sizes.train_warmup), *step_args(sizes),
                "--comparisons", sizes.train_comparisons]
        return _script_json("bench_train.py", args, tmp / "train.json")
    if section == "encode":
        args = ["--n", str(sizes.encode_n), "--batch-size", str(sizes.encode_batch), "--max-length",
                str(sizes.encode_len), "--comparisons", "fp32,defaults,fp32_st_allocator"]
        return _script_json("bench_encode.py", args, tmp / "encode.json")
    if section == "mfu":
        return measure_mfu(sizes, tmp)
    if section == "padding":
        args = ["--steps", str(sizes.padding_steps), "--warmup", str(sizes.padding_warmup), "--batch-size",
                str(sizes.padding_batch), "--max-length", str(sizes.padding_len), "--precision", "fp32",
                "--check-batches", str(sizes.padding_check_batches)]
        return _script_json("bench_padding.py", args, tmp / "padding.json")
    if section == "profile":
        args = ["profile", *step_args(sizes), "--warmup", str(sizes.profile_warmup), "--top", str(sizes.profile_top)]
        return _script_json("bench_step.py", args, tmp / "profile.json")
    if section == "refresh":
        record, _ = run_child([sys.executable, __file__, "--child", section, "--sizes",
                               json.dumps(dataclasses.asdict(sizes))])
        return record
    if section == "memory":
        args = ["--passages", str(sizes.scale_passages), "--dim", str(sizes.scale_dim), "--queries",
                str(sizes.scale_queries), "--depth", str(sizes.scale_depth), "--shards", *map(str, sizes.scale_shards)]
        proc = subprocess.run([sys.executable, str(SCRIPTS / "miner_scale.py"), *args], capture_output=True,
                              text=True, env=child_env())
        if proc.returncode != 0:
            raise RuntimeError(f"miner_scale.py exited with code {proc.returncode}:\n{proc.stderr[-3000:]}")
        configs = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
        return {"configs": configs, "command": shlex.join(["python", "scripts/miner_scale.py", *args])}
    raise ValueError(f"unknown section {section!r}; known: {', '.join(SECTIONS)}")


def finish(record: dict) -> dict:
    """Derived figures that need several sections: the refresh overhead takes its step time from the
    MFU section's default dr step (else the training section's dr at its defaults): a run of
    +experiment=ance trains at the defaults, as its refreshes encode at them."""
    sections = record["sections"]
    refresh = sections.get("refresh", {})
    if "refresh_s" in refresh:
        step = None
        default_step = sections.get("mfu", {}).get("steps", {}).get("default", {})
        default_train = sections.get("train", {}).get("comparisons", {}).get("defaults", {})
        if "step_s" in default_step:
            step = (default_step["step_s"], f"the default ({default_step['precision']}) dr training step timed "
                                            "in the MFU section")
        elif "dr" in default_train:
            dr = default_train["dr"]
            step = (dr["s_per_step"], f"dr's default ({dr['precision']}) step in the training section")
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
    parser.add_argument("--child", choices=["refresh"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        raw = json.loads(args.sizes)
        sizes = Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        print("RESULT " + json.dumps(child_refresh(sizes)))
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
              "sizes": dataclasses.asdict(sizes), "machine": machine(), "load_before": load_average(),
              "dropped_env": {k: os.environ[k] for k in DROPPED_ENV if k in os.environ}, "sections": {}}
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
