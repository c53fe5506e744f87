"""The generated block of docs/BENCHMARKS.md from a bench.json record (scripts/bench.py): one renderer per
section, each stating the precision of each side and, against issue 27's targets, "met" or "not met"."""
from __future__ import annotations

from dr.docs import describe_machine, format_duration

SECTIONS = ("train", "encode", "mfu", "padding", "profile", "refresh", "memory")
TARGETS = {  # issue 27's acceptance (training and encoding ratios are dr / sentence-transformers)
    "train_fp32": 1.0, "train_defaults": 1.2, "encode_fp32": 1.0, "mfu": 0.5, "padding_speedup": 1.5,
    "padding_loss_diff": 1e-5,
}
TITLES = {"train": "Training throughput", "encode": "Corpus encoding throughput", "mfu": "Model FLOP utilization",
          "padding": "Padding-free training batches", "profile": "Profile of one training step",
          "refresh": "Miner refresh overhead at the default schedule", "memory": "Miner memory at 1M vectors"}


def _gflops(x: float) -> str:
    return f"{x / 1e9:,.1f} GFLOP/s"


def _verdict(value: float, target: float, fmt: str) -> str:
    return f"**{fmt.format(value)}** (target >= {fmt.format(target)}: {'met' if value >= target else 'not met'})"


def _verdict_at_most(value: float, target: float) -> str:
    return f"**{value:.1e}** (target <= {target:.0e}: {'met' if value <= target else 'not met'})"


def _section_error(name: str, data: dict) -> str | None:
    if data.get("skipped"):
        return f"Not measured in this run (`--skip {name}`)."
    if "error" in data:
        return f"Failed in this run: `{data['error'].splitlines()[0]}` (full message in the JSON record)."
    return None


def _precision(side: dict, own_choice: str | None) -> str:
    """`bf16 (auto)`, `fp32 (default)` in a row of each tool's own choice (`own_choice` names it), else `fp32`."""
    return f"{side['precision']} ({own_choice})" if own_choice else side["precision"]


def _shared_runs(comparisons: dict, labels: dict) -> list[str]:
    """Sentences naming each process that served several rows (a request that resolved to a run already made)."""
    users: dict[str, list[str]] = {}
    for name, c in comparisons.items():
        for key in c.get("runs", []):
            users.setdefault(key, []).append(labels[name])
    tools = {"dr": "dr", "st": "sentence-transformers"}
    quoted = {key: " and ".join("'" + x + "'" for x in names) for key, names in users.items()}
    return [f"{tools[key.split('@')[0]]} at {key.split('@')[1]} is one measurement, shown in the rows "
            f"{quoted[key]}." for key, names in users.items() if len(names) > 1]


TRAIN_ROWS = (("fp32", "equal precision: both fp32", "train_fp32"),
              ("defaults", "each at its defaults", "train_defaults"),
              ("bf16", "both bf16 (informational)", None),
              ("fp32_st_allocator", "both fp32, sentence-transformers with dr's allocator settings (informational)",
               None))
ALLOCATOR_NOTE = (
    "Allocator. dr's processes keep glibc's malloc off `mmap` (`dr.runtime.configure_allocator`: "
    "`M_MMAP_MAX=0`, `M_TRIM_THRESHOLD=2147483647`; `DR_MALLOC=system` turns it off), so the large tensors of "
    "each step are reused instead of being mapped, page-faulted and unmapped again; sentence-transformers runs "
    "with the allocator as the process starts it. The informational row gives the sentence-transformers process "
    "the same settings (`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`) to show how much of the ratio "
    "that setting is.")


def render_train(d: dict) -> list[str]:
    comps, auto, st = d["comparisons"], d["dr_auto"], d["st_defaults"]
    ran = [c for c in comps.values() if "dr" in c]
    dr0, st0 = (ran[0]["dr"], ran[0]["sentence_transformers"]) if ran else ({}, {})
    lines = [
        f"Same model (all-MiniLM-L6-v2), {d['batch_size']} SciFact training queries a step, each with its positive "
        f"and top BM25 negative, query length {d['query_max_length']}, passage length {d['passage_max_length']}, "
        f"AdamW lr 2e-5, clip 1.0; {d['warmup_steps']} warm-up step(s), then {d['steps_timed']} timed; each tool "
        "in its own process, one after the other. dr: `Trainer.training_step` ("
        + ("padding-free batches" if dr0.get("padding_free") else "padded batches")
        + f", {dr0.get('optimizer', 'AdamW')}); sentence-transformers: `SentenceTransformerTrainer` with "
        f"`MultipleNegativesRankingLoss` ({st0.get('optimizer', 'AdamW')}).", "",
        f"Defaults on this machine. dr: `trainer.mixed_precision=auto` resolves to **{auto['precision']}**: "
        f"{auto['reason']}. sentence-transformers {st['sentence_transformers']} with transformers "
        f"{st['transformers']}: its training arguments default to `optim={st['optim']}`, `bf16={st['bf16']}`, "
        f"`fp16={st['fp16']}`, i.e. **{st['precision']}** with fused AdamW. dr fp32 is "
        "`trainer.mixed_precision=fp32 model.precision=fp32`, its other defaults kept; sentence-transformers bf16 "
        "is `bf16=True` (autocast).", "",
        "| comparison | dr precision | dr queries/s | dr s/step | sentence-transformers precision | "
        "ST queries/s | ST s/step | ratio dr / ST |", "|---|---|---|---|---|---|---|---|",
    ]
    labels = {name: label for name, label, _ in TRAIN_ROWS}
    for name, label, target in TRAIN_ROWS:
        if name not in comps:
            continue
        c = comps[name]
        if "skipped" in c:
            lines.append(f"| {label} | {c['skipped']} | | | | | | |")
            continue
        dr, s, ratio = c["dr"], c["sentence_transformers"], c["ratio_dr_over_st"]
        verdict = _verdict(ratio, TARGETS[target], "{:.2f}") if target else f"{ratio:.2f} (no target)"
        own = name == "defaults"
        lines.append(f"| {label} | {_precision(dr, 'auto' if own else None)} | {dr['queries_per_s']:.3f} | "
                     f"{dr['s_per_step']:.2f} | {_precision(s, 'default' if own else None)} | "
                     f"{s['queries_per_s']:.3f} | {s['s_per_step']:.2f} | {verdict} |")
    shared = _shared_runs({k: v for k, v in comps.items() if "runs" in v}, labels)
    lines += ["", *([" ".join(shared), ""] if shared else []), f"    {d['command']}"]
    if "fp32_st_allocator" in comps:
        lines += ["", ALLOCATOR_NOTE]
    lines += _train_notes(comps, auto)
    return lines


def _train_notes(comps: dict, auto: dict) -> list[str]:
    notes = []
    fp32, defaults = comps.get("fp32", {}), comps.get("defaults", {})
    if "ratio_dr_over_st" in fp32 and fp32["ratio_dr_over_st"] < TARGETS["train_fp32"]:
        notes.append("Below parity at equal precision. Both tools run the same torch fp32 kernels and fused AdamW, "
                     "and dr's padding-free batches skip the padded tokens' arithmetic outside attention, so dr does "
                     "less work per step; a ratio under 1.0 comes from dr's per-step overhead (tokenizing every "
                     "step, the gathers and scatters of packing) or from this run's noise. The profile section "
                     "shows where dr's step goes."
                     + (" More than 10% below: rerun `python scripts/bench_train.py --comparisons fp32` with more "
                        "`--steps` on a quiet machine before reading more into it."
                        if fp32["ratio_dr_over_st"] < 0.9 else ""))
    if "ratio_dr_over_st" in defaults and defaults["ratio_dr_over_st"] < TARGETS["train_defaults"]:
        same = defaults["dr"]["precision"] == defaults["sentence_transformers"]["precision"]
        notes.append(f"Short of the {TARGETS['train_defaults']}x target at the defaults. " + (
            f"dr's auto resolves to {auto['precision']} on this CPU ({auto['reason']}), the precision of "
            "sentence-transformers' default, so the only difference left is padding-free batches."
            if same else
            f"dr trains in {defaults['dr']['precision']} against sentence-transformers' "
            f"{defaults['sentence_transformers']['precision']}; the MFU and profile sections show how much of "
            "the default step is matmul and what the rest is."))
    return [x for note in notes for x in ("", note)]


def render_encode(d: dict) -> list[str]:
    comps, auto = d["comparisons"], d["dr_auto"]
    lines = [
        f"Same model (all-MiniLM-L6-v2), the {d['texts']}, batch {d['batch_size']}, max length {d['max_length']}, "
        "one warm-up batch excluded; each tool in its own process, one after the other. Both sort the texts by "
        "length; dr's batches are padding-free. dr's `model.precision=auto` resolves to "
        f"**{auto['precision']}**: {auto['reason']}; `SentenceTransformer(path)` loads the model in "
        "fp32 and `encode` runs it as loaded.", "",
        "| comparison | dr precision | dr passages/s | dr seconds | sentence-transformers precision | ST passages/s "
        "| ST seconds | ratio dr / ST |", "|---|---|---|---|---|---|---|---|",
    ]
    rows = (("fp32", "equal precision: both fp32", "encode_fp32"), ("defaults", "each at its defaults", None),
            ("fp32_st_allocator", "both fp32, sentence-transformers with dr's allocator settings (informational)",
             None))
    for name, label, target in rows:
        if name not in comps:
            continue
        c = comps[name]
        dr, s, ratio = c["dr"], c["sentence_transformers"], c["ratio_dr_over_st"]
        verdict = _verdict(ratio, TARGETS[target], "{:.2f}") if target else f"{ratio:.2f} (no target)"
        own = name == "defaults"
        lines.append(f"| {label} | {_precision(dr, 'auto' if own else None)} | {dr['passages_per_s']:.2f} | "
                     f"{dr['seconds']:.1f} | {_precision(s, 'default' if own else None)} | "
                     f"{s['passages_per_s']:.2f} | {s['seconds']:.1f} | {verdict} |")
    shared = _shared_runs(comps, {name: label for name, label, _ in rows})
    lines += ["", *([" ".join(shared), ""] if shared else []), f"    {d['command']}"]
    if "fp32_st_allocator" in comps:
        lines += ["", ALLOCATOR_NOTE]
    ratio = comps.get("fp32", {}).get("ratio_dr_over_st")
    if ratio is not None and ratio < TARGETS["encode_fp32"]:
        lines += ["", "Below the 1.0 target at equal precision. Both run the same fp32 forward pass on length-sorted "
                  "batches, dr on the real tokens only; the gap is per-batch overhead (tokenization, pooling, the "
                  "copies of packing) or timing noise of one pass."
                  + (" More than 10% below: rerun `python scripts/bench_encode.py --comparisons fp32` on a quiet "
                     "machine before reading more into it." if ratio < 0.9 else "")]
    return lines


def render_mfu(d: dict, machine_info: dict) -> list[str]:
    m, k, n = d["model_shape"]
    peaks, steps = d["peaks"], d["steps"]
    f32, b16 = peaks["fp32"], peaks["bf16"]
    s32, sdef = steps["fp32"], steps["default"]

    def square(p: dict) -> str:
        return ", ".join(f"{int(s):,}: {_gflops(r)}" for s, r in p["matmul_flops_per_s"].items())

    def ops(step: dict) -> str:
        return ", ".join(f"{op.replace('aten.', '')} {v / step['step_flops']:.0%}" for op, v in
                         sorted(step["step_flops_by_op"].items(), key=lambda kv: -kv[1]))

    shape_share = f32["model_shape_flops_per_s"] / f32["peak_flops_per_s"]
    default_name = f"default step: {sdef['precision']} (auto)"
    lines = [
        f"Peaks: the best square `torch.mm` per dtype, {d['threads']} torch threads: fp32 ({square(f32)}); bf16 "
        f"({square(b16)}). Steps: dr's training step of the training section's shape, padding-free batches and "
        f"{d['settings']['fp32']['optimizer']} as by default; the fp32 step with `trainer.mixed_precision=fp32 "
        f"model.precision=fp32`, the default step at `auto`, here {sdef['precision']}: {sdef['reason']}. Each "
        "step's FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode`, then the same batch is timed "
        f"again without the counter; mean of {s32['steps_timed']} step(s) after a warm-up. FlopCounterMode "
        "counts the matmuls that actually run: with padding-free batches, those of the real tokens only, fewer "
        "FLOPs than the same batch padded would cost, so the FLOP/s below are useful work, not padding.", "",
        "| matmul | fp32 | bf16 |", "|---|---|---|",
        f"| square matmul peak | {_gflops(f32['peak_flops_per_s'])} | {_gflops(b16['peak_flops_per_s'])} "
        f"({b16['peak_flops_per_s'] / f32['peak_flops_per_s']:.1f}x fp32) |",
        f"| the model's widest matmul, ({m:,} x {k}) x ({k} x {n}) | {_gflops(f32['model_shape_flops_per_s'])} "
        f"({shape_share:.0%} of peak) | {_gflops(b16['model_shape_flops_per_s'])} "
        f"({b16['model_shape_flops_per_s'] / b16['peak_flops_per_s']:.0%} of peak) |", "",
        f"| step | fp32 step | {default_name} |", "|---|---|---|",
        f"| FLOPs of one step | {s32['step_flops'] / 1e9:,.1f} GFLOP | {sdef['step_flops'] / 1e9:,.1f} GFLOP |",
        f"| FLOPs by operator | {ops(s32)} | {ops(sdef)} |",
        f"| step time | {s32['step_s']:.2f} s | {sdef['step_s']:.2f} s |",
        f"| achieved | {_gflops(s32['achieved_flops_per_s'])} | {_gflops(sdef['achieved_flops_per_s'])} |",
        f"| of the fp32 matmul peak | {s32['mfu']:.0%} | model FLOP utilization "
        f"{_verdict(sdef['of_fp32_peak'], TARGETS['mfu'], '{:.0%}')} |",
        f"| of the bf16 matmul peak | {s32['achieved_flops_per_s'] / b16['peak_flops_per_s']:.0%} | "
        f"{sdef['of_bf16_peak']:.0%} |",
    ]
    if sdef.get("same_as_fp32"):
        lines += ["", "dr's auto resolves to fp32 on this CPU, so the default step is the fp32 step (measured once); "
                  "the bf16 peak shows what bf16 matmuls cost here without native support."]
    lines += ["", *[f"    {c}" for c in d.get("commands", [])]]
    lines += ["", "The target is read on the default step, the step `python -m dr.train` takes on this CPU: useful "
              "(real-token) FLOP/s against the fp32 matmul peak, so a step that reaches it with bf16 matmuls counts, "
              "and one that spends its time outside the matmuls does not. The fp32 step is shown beside it."]
    if sdef["of_fp32_peak"] < TARGETS["mfu"] or s32["mfu"] < TARGETS["mfu"]:
        simd = ", ".join(machine_info.get("simd") or []) or "none detected"
        why = (f"The model is narrow (hidden {k}): its widest matmul runs at only {shape_share:.0%} of the "
               "square-matmul peak on this machine, which bounds MFU, and attention works on much smaller per-head "
               "matrices. The" if shape_share < 0.8 else
               f"The model's widest matmul runs at {shape_share:.0%} of the square-matmul peak, so the gap is not "
               "in the big matmuls: attention works on much smaller per-head matrices, and the")
        lead = ("Short of the 50% target." if sdef["of_fp32_peak"] < TARGETS["mfu"]
                else f"The fp32 step alone reaches {s32['mfu']:.0%}.")
        lines += ["", f"{lead} {why} rest of the step (softmax, GELU, LayerNorm, tokenization, "
                  f"packing's gathers and scatters, gradient clipping, AdamW over {d['trainable_params'] / 1e6:.1f}M "
                  "parameters) takes time without matmul FLOPs; the profile section ranks it. bf16 matmuls, where "
                  f"the CPU has them (this CPU's SIMD flags: {simd}), are the default step's answer; the fp32 "
                  "figure is bounded by this non-matmul work."]
    return lines


def render_padding(d: dict) -> list[str]:
    speed = d["speedup_padded_over_packed_sdpa"]  # the target is read on the packing alone
    diff = d["eval_fp32_max_abs_loss_diff"]
    checked = d.get("check_batches", 1)
    lines = [
        f"What it measures: forward + backward (no optimizer step) of {d['model']} (Hugging Face `AutoModel`, "
        f"SDPA attention, dropout on) on batches of {d['batch_size']} passages sampled from the MS MARCO DL19 "
        f"pool (data/msmarco-dl19-pool/collection.tsv), at most {d['max_length']} tokens, {d['precision']}, with "
        f"a mean-pooled loss: the passage half of dr's training step at the training section's shape (16 queries "
        "x 2 passages; the step adds 16 short queries, the contrastive loss, clipping and AdamW). Padded: "
        "`model(**batch)` on the batch padded to its longest passage, what `DualEncoder.embed` runs with "
        "`model.padding_free=false`. Padding-free: "
        "`dr.models.packed.packed_hidden_states`, the path `DualEncoder.embed` takes (token-wise layers on the "
        "real tokens only; attention on the padded layout). It is timed twice: with SDPA's own attention "
        "dropout, as the padded model runs it (the packing alone, which the target is read on), and as dr runs "
        "it, with `dr.models.packed.attend`'s cheaper dropout masks (CPU, training). The three alternate step "
        f"by step, {d['warmup']} warm-up then {d['steps']} timed. The loss check runs {checked} batch(es) both "
        "ways in eval mode (no dropout), fp32.", "",
        "| quantity | padded | padding-free, SDPA dropout | padding-free as dr runs it |", "|---|---|---|---|",
        f"| tokens computed (timed batches) | {d['tokens_padded']:,} (mean padded length "
        f"{d['mean_padded_length']}) | {d['tokens_unpadded']:,} ({d['token_ratio_padded_over_unpadded']:.2f}x "
        "fewer) | the same |",
        f"| wall s/step, mean (median) | {d['padded_s_per_step']:.2f} ({d['padded_s_median']:.2f}) | "
        f"{d['packed_sdpa_s_per_step']:.2f} ({d['packed_sdpa_s_median']:.2f}) | "
        f"{d['packed_s_per_step']:.2f} ({d['packed_s_median']:.2f}) |",
        f"| process CPU s/step | {d['padded_cpu_s_per_step']:.2f} | {d['packed_sdpa_cpu_s_per_step']:.2f} | "
        f"{d['packed_cpu_s_per_step']:.2f} |", "",
        "| result | value |", "|---|---|",
        f"| speedup of the packing alone, padded / padding-free with SDPA dropout (wall) | "
        f"{_verdict(speed, TARGETS['padding_speedup'], '{:.2f}x')} |",
        f"| speedup as dr runs it, padded / padding-free with dr's attention (wall) | "
        f"{d['speedup_padded_over_packed']:.2f}x |",
        f"| the latter in process CPU time | {d['cpu_time_ratio_padded_over_packed']:.2f}x |",
        f"| max \\|loss difference\\| (eval, fp32; loss {d['eval_fp32_loss_first_batch']:.4g}) | "
        f"{_verdict_at_most(diff, TARGETS['padding_loss_diff'])} |",
        "", f"    {d['command']}",
    ]
    if speed < TARGETS["padding_speedup"]:
        lines += ["", f"Short of the {TARGETS['padding_speedup']}x target. The padding-free step computes "
                  f"{d['token_ratio_padded_over_unpadded']:.2f}x fewer tokens in its token-wise layers, but attention "
                  "still runs on the padded layout and packing adds gathers and scatters; the CPU-time ratio, "
                  "steadier than wall time on a shared machine, says whether the gap is the method or the load."]
    return lines


def render_profile(d: dict) -> list[str]:
    s, share = d["settings"], d["matmul_share"]
    total = d["self_cpu_total_ms"]
    lines = [
        f"One dr training step at its defaults ({s['precision']}, `{s['requested']}`: {s['reason']}; "
        + ("padding-free batches" if s.get("padding_free") else "padded batches")
        + f"; {s['optimizer']}), the training section's shape, after {d['warmup_steps']} warm-up step(s), under "
        "`torch.profiler.profile(activities=[ProfilerActivity.CPU])`: "
        f"{d['step_wall_s']:.2f} s wall under the profiler, {total / 1e3:.2f} s of operator self time over "
        f"{d['operators']} distinct operators and autograd nodes. The profiler times an operator on the thread "
        "that calls it, so its intra-op parallel work counts once; self time excludes the operators it calls. "
        f"The top {len(d['top'])} by self CPU time:", "",
        "| operator | self CPU ms | share | calls |", "|---|---|---|---|",
        *(f"| `{op['name']}` | {op['self_cpu_ms']:,.1f} | {op['share']:.1%} | {op['calls']:,} |" for op in d["top"]),
        "",
        f"Matmul-type operators ({', '.join(f'`{x}`' for x in d['matmul_ops'])}): **{share:.0%}** of the "
        f"operators' self time ({d['matmul_ms'] / 1e3:.2f} s); everything else (element-wise ops, LayerNorm, "
        f"softmax, dropout, copies and dtype casts, the optimizer, autograd bookkeeping): {1 - share:.0%}.",
        "", f"    {d['command']}",
    ]
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
    dropped = record.get("dropped_env") or {}
    env = ("The calling environment's " + ", ".join(f"`{k}={v}`" for k, v in dropped.items())
           + " was removed from every measuring process" if dropped else
           "`DR_NATIVE_BF16` was unset in every measuring process")
    lines = [
        "<!-- generated by scripts/bench.py (make bench): edit the script, not this block -->",
        "## Measured by `make bench`", "",
        f"Generated {record['date']} by `{record['command']}` in {format_duration(record['wall_s'])}"
        + (" (**quick sizes**: a pipeline check, not a benchmark)" if record.get("quick") else "")
        + f". Machine: {describe_machine(info)}. Load average before and after: "
        f"{record['load_before']} / {record['load_after']}. Every comparison ran in its own processes, one "
        f"after the other; ratios are dr / reference (higher is better). {env}, so `auto` precision is what "
        f"this CPU supports. Raw figures: {record.get('json', 'bench.json')}.",
    ]
    renderers = {"train": render_train, "encode": render_encode, "mfu": lambda d: render_mfu(d, info),
                 "padding": render_padding, "profile": render_profile, "refresh": render_refresh,
                 "memory": render_memory}
    for name in SECTIONS:
        data = sections.get(name, {"skipped": True})
        lines += ["", f"### {TITLES[name]}", ""]
        error = _section_error(name, data)
        lines += [error] if error else renderers[name](data)
        if not error and "wall_s" in data:
            lines += ["", f"Section wall time: {format_duration(data['wall_s'])}."]
    return "\n".join(lines)
