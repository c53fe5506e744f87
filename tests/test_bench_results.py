"""`make bench` and `make results`: generated doc blocks, the results orchestrator's skip/resume logic on a
fake registry of tiny `python -c` commands, its table and significance marks, and bench.py's arithmetic,
planning and markdown (its measurements need the real model and are not run here)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import dr.compare as compare_module
from dr.docs import (SIMD_FLAGS, describe_machine, format_duration, insert_after_intro, invocation, machine, markers,
                     replace_block)

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    if str(ROOT / "scripts") not in sys.path:  # the scripts import each other as scripts/ siblings
        sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


results = _load("results")
bench = _load("bench")
bench_train = _load("bench_train")
bench_encode = _load("bench_encode")
bench_step = _load("bench_step")


# ------------------------------------------------------------------------------------------ doc blocks

INTRO = "# Title\n\nFirst paragraph,\ntwo lines.\n\nSecond paragraph.\n\n## Section\n\nBody.\n"


def test_replace_block_keeps_the_rest_byte_identical():
    begin, end = markers("bench")
    before, after = "# T\n\nintro  \n\n", "\n\n## Next\n\ntrailing spaces   \n\n\nno newline at end"
    text = f"{before}{begin}\nold table\nold line\n{end}{after}"
    out = replace_block(text, "bench", "new table\n")
    assert out == f"{before}{begin}\nnew table\n{end}{after}"
    assert replace_block(out, "bench", "new table") == out  # idempotent


def test_replace_block_inserts_after_the_intro_when_markers_are_missing():
    out = replace_block(INTRO, "results", "the table")
    begin, end = markers("results")
    block = f"{begin}\nthe table\n{end}"
    assert out == INTRO.replace("## Section", f"{block}\n\n## Section")
    assert out.replace(block + "\n\n", "", 1) == INTRO  # only the block was added
    assert replace_block(out, "results", "other") == out.replace("the table", "other")


def test_insert_ignores_headings_in_code_fences_and_appends_without_a_second_heading():
    fenced = "# T\n\nintro\n\n```\n# not a heading\n```\n\nmore\n"
    assert insert_after_intro(fenced, "B") == fenced + "\nB\n"
    assert insert_after_intro("# T\nno newline", "B") == "# T\nno newline\n\nB\n"
    assert insert_after_intro("", "B") == "B\n"


def test_replace_block_refuses_unbalanced_markers():
    begin, end = markers("x")
    for text in (f"a\n{begin}\nb\n", f"a\n{end}\n{begin}\n", f"{begin}\n{end}\n{begin}\n{end}\n"):
        with pytest.raises(ValueError, match="'x'"):
            replace_block(text, "x", "body")


@pytest.mark.parametrize("doc,name,next_heading", [("BENCHMARKS.md", "bench", "\n## Reading the latest `make bench`"),
                                                    ("RESULTS.md", "results", "\n## Table\n")])
def test_real_docs_get_the_block_before_their_first_section(doc, name, next_heading):
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    begin, end = markers(name)
    block = "\n".join([begin, "GENERATED", end])
    if begin in text:  # the committed doc has the block: a regeneration replaces it and nothing else
        assert text.count(begin) == text.count(end) == 1
        assert text.index(end) < text.index(next_heading)
        out = replace_block(text, name, "GENERATED")
        i, j = text.index(begin), text.index(end) + len(end)
        assert out == text[:i] + block + text[j:]
    else:  # first run: inserted after the intro, the rest kept byte for byte
        out = replace_block(text, name, "GENERATED")
        assert out.replace(block + "\n\n", "", 1) == text
        assert out.index(block) < out.index(next_heading) < out.index(block) + len(block) + 3


def test_invocation_names_make_when_make_ran_it(monkeypatch):
    monkeypatch.delenv("MAKELEVEL", raising=False)
    assert invocation("scripts/bench.py", ["--skip", "a b"], "bench") == "python scripts/bench.py --skip 'a b'"
    monkeypatch.setenv("MAKELEVEL", "1")
    assert invocation("scripts/bench.py", [], "bench") == "make bench (python scripts/bench.py)"


def test_format_duration_and_machine_line():
    assert [format_duration(s) for s in (None, 15.4, 1709, 18125)] == ["-", "15 s", "28 min 29 s", "5 h 02 min"]
    line = describe_machine({"cpu": "Test CPU", "simd": ["avx2"], "logical_cores": 2, "ram_gb": 23.4, "gpu": None,
                             "os": "Linux", "python": "3.11", "torch": "2.13", "torch_threads": 2, "faiss": "1.15"})
    assert line.startswith("Test CPU (avx2), 2 logical cores, 23.4 GB RAM, no GPU") and "faiss 1.15" in line
    checked = describe_machine({"cpu": "AMD EPYC", "cpu_family": "26", "cpu_model": "2", "logical_cores": 2,
                                "simd": ["avx2", "avx512f", "avx512_bf16"], "simd_checked": list(SIMD_FLAGS)})
    assert checked.startswith("AMD EPYC (family 26, model 2; avx2, avx512f, avx512_bf16; no amx_bf16), 2 logical")
    assert describe_machine({"cpu": "Old", "simd": [], "simd_checked": ["avx2", "amx_bf16"]}).startswith(
        "Old (no avx2, amx_bf16),")


def test_machine_names_the_cpu_and_checks_the_bf16_flags():
    m = machine()
    assert m["cpu"] and m["simd_checked"] in ([], list(SIMD_FLAGS)) and set(m["simd"]) <= set(SIMD_FLAGS)
    assert SIMD_FLAGS == ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


# ------------------------------------------------------------------------------------------ results.py

# Writes metrics.json and perquery/<set>.tsv from per-query values given as JSON, and counts its calls.
WRITER = """
import json, pathlib, sys
out = pathlib.Path(sys.argv[-1].split("=", 1)[1])
values = json.loads(sys.argv[1])
metrics = {}
for name, per in values.items():
    (out / "perquery").mkdir(parents=True, exist_ok=True)
    rows = [f"{q}\\t{m}\\t{v}" for m in ("RR@10", "nDCG@10", "R@100") for q, v in per.items()]
    lines = ["qid\\tmeasure\\tvalue"] + rows
    (out / "perquery" / f"{name}.tsv").write_text("\\n".join(lines) + "\\n")
    mean = sum(per.values()) / len(per)
    metrics[name] = {"RR@10": mean, "nDCG@10": mean, "R@100": mean}
(out / "metrics.json").write_text(json.dumps(metrics))
with open(out.parent / "calls.log", "a") as f:
    f.write(out.name + "\\n")
"""

SETS = ("scifact-test", "dl19-pool")


def writer(scifact: list[float], dl19: list[float] | None = None, sets=SETS, suffix: str = "") -> "results.Step":
    values = {"scifact-test": {f"q{i}": v for i, v in enumerate(scifact)},
              "dl19-pool": {f"d{i}": v for i, v in enumerate(dl19 or scifact)}}
    values = {s: values[s] for s in sets}
    return results.Step(("python", "-c", WRITER, json.dumps(values)), sets, suffix)


BASE = [0.2 + 0.01 * i for i in range(30)]
BETTER = [v + 0.3 for v in BASE]


def fake_registry(**changes) -> tuple:
    E = results.Experiment
    steps = {
        "bm25": (writer(BASE),),
        "bm25_negatives": (writer(BASE),),
        "twostep": (writer(BETTER, sets=("scifact-test",)), writer(BETTER, BASE, sets=("dl19-pool",), suffix="dl19")),
        "child": (writer(BASE),),
    }
    steps.update(changes)
    return (E("bm25", "BM25", steps["bm25"]), E("bm25_negatives", "bm25 negatives", steps["bm25_negatives"]),
            E("twostep", "two steps", steps["twostep"]),
            E("child", "after twostep", steps["child"], after=("twostep",)))


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "machine", lambda: {"cpu": "test CPU", "logical_cores": 2})
    outputs = tmp_path / "outputs"
    md = tmp_path / "RESULTS.md"
    md.write_text(INTRO)

    def run(*extra: str, registry=None) -> int:
        return results.main(["--outputs", str(outputs), "--out-md", str(md), "--out-png", str(tmp_path / "r.png"),
                             *extra], experiments=registry or fake_registry())

    def calls() -> list[str]:
        log = outputs / "calls.log"
        return log.read_text().split() if log.exists() else []

    return run, calls, outputs, md


def test_results_runs_everything_once_then_skips(env, capsys):
    run, calls, outputs, md = env
    assert run() == 0
    assert calls() == ["bm25", "bm25_negatives", "twostep", "twostep-dl19", "child"]
    record = json.loads((outputs / "twostep-dl19" / "results.json").read_text())
    assert record["command"].endswith(f"hydra.run.dir={outputs / 'twostep-dl19'}") and record["wall_s"] > 0
    capsys.readouterr()
    assert run() == 0
    assert len(calls()) == 5  # nothing reran
    assert "done, skip" in capsys.readouterr().out
    text = md.read_text()
    assert text.startswith("# Title\n\nFirst paragraph,") and text.endswith("## Section\n\nBody.\n")
    assert (outputs.parent / "r.png").stat().st_size > 10_000


def test_results_reruns_a_changed_command_and_what_depends_on_it(env):
    run, calls, outputs, _ = env
    assert run() == 0
    changed = fake_registry(twostep=(writer(BASE, sets=("scifact-test",)),
                                     writer(BETTER, BASE, sets=("dl19-pool",), suffix="dl19")))
    assert run("--dry-run", registry=changed) == 0
    assert len(calls()) == 5  # a dry run runs nothing
    assert run(registry=changed) == 0
    assert calls()[5:] == ["twostep", "twostep-dl19", "child"]
    assert run("--force", "bm25", registry=changed) == 0 and calls()[8:] == ["bm25"]
    assert run("--force", "twostep", registry=changed) == 0 and calls()[9:] == ["twostep", "twostep-dl19", "child"]


def test_results_resumes_after_an_incomplete_run(env):
    run, calls, outputs, _ = env
    assert run("--only", "bm25") == 0
    (outputs / "bm25" / "results.json").unlink()  # as if killed before the record was written
    assert run("--only", "child") == 0  # child needs twostep: both run, bm25 is not asked for
    assert calls() == ["bm25", "twostep", "twostep-dl19", "child"]
    assert run() == 0
    assert calls()[4:] == ["bm25", "bm25_negatives"]


def test_results_stops_at_a_failing_command_naming_the_experiment(env, capsys):
    run, calls, outputs, md = env
    failing = fake_registry(twostep=(results.Step(("python", "-c", "import sys; print('boom'); sys.exit(3)"),
                                                  ("scifact-test",)),))
    assert run(registry=failing) == 1
    err = capsys.readouterr().err
    assert "experiment 'twostep' failed: exited with code 3" in err and "boom" in err
    assert calls() == ["bm25", "bm25_negatives"]  # child never started
    assert md.read_text() == INTRO  # the doc is left alone
    no_metrics = fake_registry(child=(results.Step(("python", "-c", "pass"), ("scifact-test",)),))
    assert run(registry=no_metrics) == 1
    assert "experiment 'child' failed: exited 0 but its metrics.json lacks scifact-test" in capsys.readouterr().err


def test_results_table_says_not_run_and_marks_significance(env):
    run, _, outputs, md = env
    assert run("--only", "bm25_negatives,twostep") == 0
    table = md.read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert rows["BM25"].count("not run") == 3  # scifact, dl19, wall time
    assert "not run" in rows["after twostep"]
    # twostep is 0.3 better on every SciFact query and identical to the baseline on DL19
    cells = rows["two steps"].split(" | ")
    assert cells[2] == "0.6450†‡" and cells[5] == f"{sum(BASE) / 30:.4f}"
    assert "†" not in rows["bm25 negatives (baseline)"] and "‡" not in rows["bm25 negatives (baseline)"]
    assert "](r.png)" in table and "    python -c" in table


def test_results_table_only_runs_nothing_and_uses_timings_json(env):
    run, calls, outputs, md = env
    assert run("--table-only") == 0
    assert calls() == [] and md.read_text().count("not run") >= 3 * 4
    (outputs / "bm25").mkdir(parents=True)
    (outputs / "bm25" / "metrics.json").write_text(json.dumps({s: {"nDCG@10": 0.5} for s in SETS}))
    (outputs / "bm25" / "timings.json").write_text(json.dumps({"wall_s": 15.2}))
    assert run("--table-only") == 0
    row = next(x for x in md.read_text().splitlines() if x.startswith("| BM25 *"))  # no record: marked *
    assert "| 15 s |" in row and "0.5000" in row
    (outputs / "bm25" / "timings.json").write_text(json.dumps({"wall_s": 15.2, "cache_hits": 1}))
    (outputs / "bm25" / "refresh.jsonl").write_text('{"cache_hit": true}\n{"cache_hit": false}\n')
    assert run("--table-only") == 0
    row = next(x for x in md.read_text().splitlines() if x.startswith("| BM25 *"))
    assert "| 15 s (2 corpus encodings from the cache) |" in row
    # dr now records what it took from earlier runs; that figure replaces the partial count
    (outputs / "bm25" / "timings.json").write_text(json.dumps({"wall_s": 15.2, "cache_hits": 1,
                                                               "embedding_cache_reused": 3}))
    assert run("--table-only") == 0
    row = next(x for x in md.read_text().splitlines() if x.startswith("| BM25 *"))
    assert "| 15 s (3 corpus encodings from the cache) |" in row


def test_results_registry_checks():
    E, S = results.Experiment, results.Step
    with pytest.raises(ValueError, match="'b' runs after 'c'"):
        results.check_registry([E("b", "b", (), after=("c",))])
    with pytest.raises(ValueError, match=r"reads \{run:a\}"):
        results.check_registry([E("a", "a", ()), E("b", "b", (S(("python", "{run:a}/export")),))])
    results.check_registry(results.REGISTRY)
    names = [e.name for e in results.REGISTRY]
    assert names.index("star") < names.index("star_adore") and names.index("bm25_negatives") < names.index("ar2")
    assert results.select(results.REGISTRY, ["ar2_ranker"]) == [
        e for e in results.REGISTRY if e.name in ("bm25_negatives", "ar2", "ar2_ranker")]


def test_results_real_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # plan() reads the run dirs; none exist here
    states = {s.key: s.command for s in results.plan(results.REGISTRY, Path("outputs/results"))}
    assert states["bm25[0]"] == "python -m dr.evaluate retriever=bm25 hydra.run.dir=outputs/results/bm25"
    assert states["star_adore[0]"] == ("python -m dr.train +experiment=adore model.name_or_path=outputs/results/star/"
                                       "export hydra.run.dir=outputs/results/star_adore")
    assert states["ar2_ranker[0]"] == (
        "python -m dr.evaluate retriever=rerank_dense model.name_or_path=outputs/results/ar2/export "
        "ranker.name_or_path=outputs/results/ar2/export/ranker hydra.run.dir=outputs/results/ar2_ranker")
    assert "'eval_sets=[dl19-pool]'" in states["ance[1]"]


def test_results_per_query_from_a_trec_run_when_the_tsv_is_missing(tmp_path, monkeypatch):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 0 d1 2\nq1 0 d2 1\nq2 0 d3 1\n")
    monkeypatch.setattr(compare_module, "qrels_source", lambda name: (qrels, 1))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "scifact-test.trec").write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 d9 2 1.0 x\nq2 Q0 d9 1 1.0 x\n")
    values = results.load_per_query(tmp_path, "scifact-test")["nDCG@10"]
    assert values["q2"] == 0.0 and 0.5 < values["q1"] < 1.0


# ------------------------------------------------------------------------------------------ bench.py


def test_mfu_arithmetic_on_a_known_flop_count():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    assert bench.matmul_flops(2, 3, 4) == 48
    layer = torch.nn.Linear(8, 16, bias=False)
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(4, 8)).sum().backward()
    # forward 2*4*8*16; backward: the weight's gradient (same) and no input gradient (a leaf input)
    assert counter.get_total_flops() == 2 * bench.matmul_flops(4, 8, 16) == 2048
    assert bench.mfu(6e9, 2.0, 1e10) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        bench.mfu(1.0, 0.0, 1.0)


def test_refresh_schedule_and_overhead():
    assert [bench.count_refreshes(e, s) for e, s in ((5, 15), (0, 15), (6, 12), (5, 16))] == [3, 1, 2, 4]
    assert bench.refresh_overhead(3, 100.0, 15, 20.0) == pytest.approx(0.5)


def _dr(qps: float, precision: str, requested: str) -> dict:
    return {"queries_per_s": qps, "s_per_step": 16 / qps, "requested": requested, "precision": precision,
            "reason": "test", "optimizer": "fused AdamW", "padding_free": True}


def _st(qps: float, precision: str, requested: str) -> dict:
    return {"queries_per_s": qps, "s_per_step": 16 / qps, "requested": requested, "precision": precision,
            "optim": "adamw_torch_fused", "optimizer": "fused AdamW"}


def fake_train(fp32_ratio: float, default_ratio: float, auto: str = "bf16") -> dict:
    comparisons = {
        "fp32": {"dr": _dr(fp32_ratio, "fp32", "fp32"), "sentence_transformers": _st(1.0, "fp32", "fp32"),
                 "ratio_dr_over_st": fp32_ratio, "runs": ["dr@fp32", "st@fp32"]},
        "defaults": {"dr": _dr(default_ratio, auto, "auto"), "sentence_transformers": _st(1.0, "fp32", "fp32"),
                     "ratio_dr_over_st": default_ratio, "runs": [f"dr@{auto}", "st@fp32"]},
        "bf16": ({"dr": _dr(default_ratio, "bf16", "auto"), "sentence_transformers": _st(1.5, "bf16", "bf16"),
                  "ratio_dr_over_st": default_ratio / 1.5, "runs": ["dr@bf16", "st@bf16"]} if auto == "bf16"
                 else {"skipped": "not run: this CPU has no native bf16 matmul"}),
    }
    return {"batch_size": 16, "query_max_length": 64, "passage_max_length": 256, "warmup_steps": 1, "steps_timed": 5,
            "dr_auto": {"precision": auto, "reason": f"the CPU probe says {auto}"},
            "st_defaults": {"optim": "adamw_torch_fused", "bf16": False, "fp16": False, "precision": "fp32",
                            "sentence_transformers": "6.3.0", "transformers": "5.24.0"},
            "comparisons": comparisons, "command": "python scripts/bench_train.py --steps 5", "wall_s": 240.0}


def fake_step(flops: float, seconds: float, precision: str, mfu_value: float | None = None) -> dict:
    step = {"precision": precision, "reason": "test", "step_flops": flops, "step_flops_by_op": {"aten.mm": flops},
            "step_s": seconds, "steps_timed": 3, "achieved_flops_per_s": flops / seconds}
    return {**step, "mfu": mfu_value} if mfu_value is not None else step


def fake_mfu(mfu_value: float, auto: str = "bf16") -> dict:
    fp32_peak, bf16_peak = 1e11, 4e11
    flops = mfu_value * fp32_peak * 15.0  # a 15 s fp32 step at mfu_value of the fp32 peak
    default = fake_step(flops, 5.0, "bf16") if auto == "bf16" else {**fake_step(flops, 15.0, "fp32"),
                                                                     "same_as_fp32": True}
    default.update(of_fp32_peak=default["achieved_flops_per_s"] / fp32_peak,
                   of_bf16_peak=default["achieved_flops_per_s"] / bf16_peak)
    return {"threads": 2, "model_shape": [8192, 384, 1536], "trainable_params": 22_700_000,
            "settings": {"fp32": {"optimizer": "fused AdamW"}, "default": {"optimizer": "fused AdamW"}},
            "peaks": {"fp32": {"matmul_flops_per_s": {"2048": 9e10, "4096": fp32_peak}, "peak_flops_per_s": fp32_peak,
                               "model_shape_flops_per_s": 6e10},
                      "bf16": {"matmul_flops_per_s": {"2048": 3e11, "4096": bf16_peak}, "peak_flops_per_s": bf16_peak,
                               "model_shape_flops_per_s": 2e11}},
            "steps": {"fp32": fake_step(flops, 15.0, "fp32", mfu_value), "default": default}, "mfu": mfu_value,
            "commands": ["python scripts/bench_step.py mfu --precision fp32", "python scripts/bench_step.py mfu "
                         "--precision auto"]}


def fake_padding(speedup: float, diff: float) -> dict:
    return {"model": "all-MiniLM-L6-v2", "precision": "fp32", "batch_size": 32, "max_length": 256, "steps": 3,
            "warmup": 1, "check_batches": 2, "padded_s_per_step": 6.0 * speedup, "packed_s_per_step": 6.0,
            "padded_s_median": 6.0 * speedup, "packed_s_median": 6.0, "speedup_padded_over_packed": speedup,
            "packed_sdpa_s_per_step": 6.0, "packed_sdpa_s_median": 6.0, "packed_sdpa_cpu_s_per_step": 12.0,
            "speedup_padded_over_packed_sdpa": speedup,
            "padded_cpu_s_per_step": 12.0 * speedup, "packed_cpu_s_per_step": 12.0,
            "cpu_time_ratio_padded_over_packed": speedup, "tokens_padded": 18_000, "tokens_unpadded": 7_800,
            "token_ratio_padded_over_unpadded": 2.31, "mean_padded_length": 187.5,
            "eval_fp32_max_abs_loss_diff": diff, "eval_fp32_loss_first_batch": 241.1,
            "command": "python scripts/bench_padding.py --steps 3"}


def fake_profile() -> dict:
    top = [("aten::mm", 900.0, 300), ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", 300.0, 6),
           ("aten::copy_", 200.0, 500), ("aten::native_layer_norm", 100.0, 26)]
    return {"settings": {"requested": "auto", "precision": "bf16", "reason": "the CPU has native bf16 matmul",
                         "padding_free": True, "optimizer": "fused AdamW"},
            "warmup_steps": 1, "step_wall_s": 2.0, "self_cpu_total_ms": 1600.0, "operators": 120,
            "top": [{"name": n, "self_cpu_ms": ms, "share": ms / 1600.0, "calls": c} for n, ms, c in top],
            "matmul_ms": 1200.0, "matmul_share": 0.75, "matmul_ops": ["aten::mm", "aten::_scaled_dot_product*"],
            "command": "python scripts/bench_step.py profile"}


def fake_bench_record(train_ratio: float, mfu_value: float, fp32_ratio: float = 1.05, speedup: float = 1.8,
                      loss_diff: float = 0.0, auto: str = "bf16") -> dict:
    encode_fp32 = {"dr": {"passages_per_s": 9.6, "seconds": 53.0, "requested": "fp32", "precision": "fp32"},
                   "sentence_transformers": {"passages_per_s": 9.4, "seconds": 54.0, "requested": "default",
                                             "precision": "fp32"},
                   "ratio_dr_over_st": 1.02, "runs": ["dr@fp32", "st@default"]}
    encode_defaults = {"dr": {"passages_per_s": 20.0, "seconds": 25.6, "requested": "auto", "precision": "bf16"},
                       "sentence_transformers": encode_fp32["sentence_transformers"], "ratio_dr_over_st": 2.13,
                       "runs": ["dr@bf16", "st@default"]}
    return bench.finish({
        "date": "2025-01-01 10:00 +0000", "command": "python scripts/bench.py", "wall_s": 900.0, "quick": False,
        "load_before": "0.10 0.10 0.10", "load_after": "2.00 1.50 1.00", "dropped_env": {"DR_NATIVE_BF16": "0"},
        "machine": {"cpu": "Test CPU", "simd": ["avx2"], "simd_checked": list(SIMD_FLAGS), "logical_cores": 2,
                    "ram_gb": 23.4, "torch_threads": 2},
        "sizes": {"batch_size": 16, "query_len": 64, "passage_len": 256},
        "sections": {
            "train": fake_train(fp32_ratio, train_ratio, auto),
            "encode": {"texts": "first 512 SciFact abstracts (title + text)", "batch_size": 64, "max_length": 256,
                       "dr_auto": {"precision": "bf16", "reason": "test"},
                       "comparisons": {"fp32": encode_fp32, "defaults": encode_defaults},
                       "command": "python scripts/bench_encode.py --n 512"},
            "mfu": fake_mfu(mfu_value, auto),
            "padding": fake_padding(speedup, loss_diff),
            "profile": fake_profile(),
            "refresh": {"refresh_every": 5, "max_steps": 15, "refreshes": 3, "miner_passage_len": 128, "depth": 200,
                        "index": "Flat", "corpus_passages": 5183, "queries": 729, "extrapolated": True,
                        "encoded_passages": 1000, "encode_s": 280.0, "query_s": 10.0, "search_s": 0.1,
                        "refresh_s": 290.1, "batch_size": 16, "query_len": 64, "passage_len": 256,
                        "negatives_per_query": 1},
            "memory": {"skipped": True},
        },
    })


def test_bench_markdown_states_targets_and_only_known_reasons():
    short = bench.render(fake_bench_record(train_ratio=1.04, mfu_value=0.3, fp32_ratio=0.95, speedup=1.3,
                                           loss_diff=3e-5))
    assert "| equal precision: both fp32 | fp32 |" in short and "**0.95** (target >= 1.00: not met)" in short
    assert "| each at its defaults | bf16 (auto) |" in short and "| fp32 (default) |" in short
    assert "**1.04** (target >= 1.20: not met)" in short and "Short of the 1.2x target at the defaults" in short
    assert "Below parity at equal precision" in short and "More than 10% below" not in short
    assert "| both bf16 (informational) | bf16 | 1.040 |" in short and "(no target)" in short
    assert "`optim=adamw_torch_fused`, `bf16=False`, `fp16=False`, i.e. **fp32**" in short
    assert "sentence-transformers at fp32 is one measurement, shown in the rows 'equal precision: both fp32' and " \
           "'each at its defaults'." in short
    # MFU: the default step against the fp32 peak (the target; 3x faster in bf16 here), the fp32 step beside it
    assert "(60% of peak)" in short and "(4.0x fp32)" in short
    assert "| of the fp32 matmul peak | 30% | model FLOP utilization **90%** (target >= 50%: met) |" in short
    assert "The fp32 step alone reaches 30%." in short and "Short of the 50% target" not in short
    assert "| of the bf16 matmul peak | 8% | 22% |" in short and "real tokens only" in short
    # padding-free: speed and loss both judged; profile table and matmul share
    assert "**1.30x** (target >= 1.50x: not met)" in short and "**3.0e-05** (target <= 1e-05: not met)" in short
    assert "Short of the 1.5x target" in short and "forward + backward" in short
    assert "| `aten::mm` | 900.0 | 56.2% | 300 |" in short and "**75%** of the operators' self time" in short
    # refresh overhead from the MFU section's default step: 3 x 290.1 / (3 x 290.1 + 15 x 5)
    assert f"**{3 * 290.1 / (3 * 290.1 + 15 * 5):.0%}**" in short and "extrapolated: 1,000 sampled" in short
    assert "default (bf16) dr training step timed in the MFU section" in short
    assert "Not measured in this run (`--skip memory`)" in short
    assert "`DR_NATIVE_BF16=0` was removed from every measuring process" in short
    assert "Test CPU (avx2; no avx512f, avx512_bf16, amx_bf16)" in short
    assert "Below the 1.0 target" not in short  # encoding 1.02 meets it
    assert "**1.02** (target >= 1.00: met)" in short and "2.13 (no target)" in short
    fp32_cpu = bench.render(fake_bench_record(train_ratio=1.3, mfu_value=0.3, auto="fp32"))
    assert "| of the fp32 matmul peak | 30% | model FLOP utilization **30%** (target >= 50%: not met) |" in fp32_cpu
    assert "Short of the 50% target." in fp32_cpu and "the default step is the fp32 step" in fp32_cpu
    assert "Allocator." not in short  # no informational allocator row, no note about it
    record = fake_bench_record(train_ratio=1.3, mfu_value=0.6)
    record["sections"]["train"]["comparisons"]["fp32_st_allocator"] = {
        "dr": _dr(1.05, "fp32", "fp32"), "sentence_transformers": _st(1.02, "fp32", "fp32"),
        "ratio_dr_over_st": 1.05 / 1.02, "runs": ["dr@fp32", "st@fp32+allocator"]}
    tuned = bench.render(record)
    assert "| both fp32, sentence-transformers with dr's allocator settings (informational) | fp32 | 1.050 |" in tuned
    assert "1.03 (no target)" in tuned and "MALLOC_MMAP_MAX_=0" in tuned
    assert "dr at fp32 is one measurement, shown in the rows 'equal precision: both fp32' and 'both fp32, " in tuned
    met = bench.render(fake_bench_record(train_ratio=1.3, mfu_value=0.6))
    assert "Short of" not in met and "Below" not in met
    assert "target >= 1.20: met" in met and "target >= 1.00: met" in met and "target >= 50%: met" in met
    assert "**1.80x** (target >= 1.50x: met)" in met and "**0.0e+00** (target <= 1e-05: met)" in met


def test_bench_markdown_on_a_cpu_without_native_bf16():
    text = bench.render(fake_bench_record(train_ratio=1.05, mfu_value=0.55, auto="fp32"))
    assert "| both bf16 (informational) | not run: this CPU has no native bf16 matmul |" in text
    assert "dr's auto resolves to fp32 on this CPU (the CPU probe says fp32)" in text
    assert "the only difference left is padding-free batches" in text
    assert "| default step: fp32 (auto) |" in text and "so the default step is the fp32 step" in text
    assert "| of the fp32 matmul peak | 55% | model FLOP utilization **55%** (target >= 50%: met) |" in text


def test_bench_train_plans_one_process_per_distinct_setting():
    comparisons, runs = bench_train.plan(["fp32", "defaults", "bf16"], dr_auto="bf16", st_default="fp32")
    assert comparisons == {"fp32": ("dr@fp32", "st@fp32"), "defaults": ("dr@bf16", "st@fp32"),
                           "bf16": ("dr@bf16", "st@bf16")}
    assert runs == {"dr@fp32": ("dr", "fp32"), "st@fp32": ("st", "fp32"), "dr@bf16": ("dr", "auto"),
                    "st@bf16": ("st", "bf16")}
    comparisons, runs = bench_train.plan(["fp32", "defaults", "bf16"], dr_auto="fp32", st_default="fp32")
    assert comparisons["defaults"] == comparisons["fp32"] == ("dr@fp32", "st@fp32")
    assert "no native bf16" in comparisons["bf16"] and list(runs) == ["dr@fp32", "st@fp32"]
    assert bench_train.precision_overrides("auto") == []
    assert bench_train.precision_overrides("fp32") == ["trainer.mixed_precision=fp32", "model.precision=fp32"]
    assert bench_train.st_arguments("default") == {} and bench_train.st_arguments("bf16") == {"bf16": True}
    comparisons, runs = bench_encode.plan(["fp32", "defaults"], dr_auto="fp32")
    assert comparisons == {"fp32": ("dr@fp32", "st@default"), "defaults": ("dr@fp32", "st@default")}
    assert len(runs) == 2
    # the informational row: the same dr process, a second sentence-transformers process with dr's allocator
    comparisons, runs = bench_train.plan(["fp32", "fp32_st_allocator"], dr_auto="bf16", st_default="fp32")
    assert comparisons["fp32_st_allocator"] == ("dr@fp32", "st@fp32+allocator") and len(runs) == 3
    assert runs["st@fp32+allocator"] == ("st", "fp32+allocator")
    assert bench_train.split_request("fp32+allocator") == ("fp32", True)
    assert bench_train.split_request("default") == ("default", False)
    with pytest.raises(ValueError):
        bench_train.split_request("fp32+jemalloc")
    comparisons, runs = bench_encode.plan(["fp32", "fp32_st_allocator"], dr_auto="bf16")
    assert comparisons["fp32_st_allocator"] == ("dr@fp32", "st@default+allocator") and len(runs) == 3


def test_bench_children_do_not_inherit_the_bf16_override(monkeypatch):
    monkeypatch.setenv("DR_NATIVE_BF16", "0")
    env = bench.child_env()
    assert "DR_NATIVE_BF16" not in env and env["HF_HUB_OFFLINE"] == "1"


def test_profile_counts_matmul_type_operators():
    assert all(bench_step.is_matmul(x) for x in ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear",
                                                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward"))
    assert not any(bench_step.is_matmul(x) for x in ("aten::copy_", "aten::mul", "aten::_fused_adamw_"))


def test_padding_target_is_read_on_the_packing_alone_when_timed_three_ways():
    """With dr's attention dropout timed separately, the 1.5x target is judged on padded / packed-with-SDPA."""
    record = fake_padding(1.3, 0.0)  # as dr runs it: 1.3x
    record.update({"packed_sdpa_s_per_step": 4.0, "packed_sdpa_s_median": 4.0, "packed_sdpa_cpu_s_per_step": 8.0,
                   "speedup_padded_over_packed_sdpa": 1.95})
    lines = "\n".join(_load("bench_report").render_padding(record))
    assert "| speedup of the packing alone, padded / padding-free with SDPA dropout (wall) | **1.95x** " \
           "(target >= 1.50x: met) |" in lines
    assert "| speedup as dr runs it, padded / padding-free with dr's attention (wall) | 1.30x |" in lines
    assert "| wall s/step, mean (median) | 7.80 (7.80) | 4.00 (4.00) | 6.00 (6.00) |" in lines
    assert "Short of" not in lines


# A training-like step: its values shift by `shift` x K for `seed=K` (no shift for the default seed), and
# it logs its run dir relative to the outputs root.
SEEDED_WRITER = """
import json, pathlib, sys
out = pathlib.Path(sys.argv[-1].split("=", 1)[1])
seed = int(sys.argv[-2].split("=", 1)[1]) if sys.argv[-2].startswith("seed=") else 0
values, shift = json.loads(sys.argv[1]), float(sys.argv[2])
metrics = {}
for name, per in values.items():
    per = {q: v + shift * seed for q, v in per.items()}
    (out / "perquery").mkdir(parents=True, exist_ok=True)
    lines = ["qid\\tmeasure\\tvalue"] + [f"{q}\\tnDCG@10\\t{v}" for q, v in per.items()]
    (out / "perquery" / f"{name}.tsv").write_text("\\n".join(lines) + "\\n")
    mean = sum(per.values()) / len(per)
    metrics[name] = {"RR@10": mean, "nDCG@10": mean, "R@100": mean}
(out / "metrics.json").write_text(json.dumps(metrics))
root = out.parent.parent if out.name.startswith("seed-") else out.parent
with open(root / "calls.log", "a") as f:
    f.write(str(out.relative_to(root)) + "\\n")
"""


def seeded_registry(method_shift: float) -> tuple:
    def step(values: list[float], shift: float, ref: str = "") -> "results.Step":
        data = json.dumps({s: {f"q{i}": v for i, v in enumerate(values)} for s in SETS})
        argv = ("python", "-c", SEEDED_WRITER, data, str(shift)) + ((f"{{run:{ref}}}",) if ref else ())
        return results.Step(argv, SETS, seed_arg="seed={seed}")

    E = results.Experiment
    # the derived row's extra argument must not end up where the writer reads the seed: it goes first
    derived = results.Step(("python", "-c", SEEDED_WRITER, json.dumps({s: {f"q{i}": v for i, v in enumerate(BASE)}
                                                                        for s in SETS}), "0", "{run:method}"), SETS)
    return (E("bm25", "BM25", (writer(BASE),)),
            E("bm25_negatives", "baseline", (step(BASE, 0.001),)),
            E("method", "method", (step(BETTER, method_shift),)),
            E("derived", "made from method", (derived,), after=("method",)))


def test_results_seeds_run_into_seed_dirs_and_show_mean_sd(env):
    run, calls, outputs, md = env
    registry = seeded_registry(method_shift=0.01)
    assert run("--seeds", "3", "--only", "bm25_negatives,derived", registry=registry) == 0
    assert calls() == ["bm25_negatives", "bm25_negatives/seed-1", "bm25_negatives/seed-2", "method",
                       "method/seed-1", "method/seed-2", "derived", "derived/seed-1", "derived/seed-2"]
    states = {s.key: s for s in results.plan(registry, outputs, seeds={"derived": [2], "method": [2]})}
    assert states["method[0]@seed-2"].command.endswith(f"seed=2 hydra.run.dir={outputs / 'method' / 'seed-2'}")
    assert f"{outputs / 'method' / 'seed-2'} hydra.run.dir" in states["derived[0]@seed-2"].command  # its seed
    assert " seed=" not in states["derived[0]@seed-2"].command  # a step without seed_arg gets no override
    assert all(s.done for s in states.values() if s.experiment.name != "bm25")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.read_text().splitlines() if line.startswith("| ")}
    # method: BETTER + 0, 0.01, 0.02 -> mean 0.645 + 0.01, sd 0.01; the baseline's seeds barely move, so all
    # three tests find the +0.31
    cells = rows["method, 3 seeds"].split(" | ")
    assert cells[2] == "0.6550 ± 0.0100†‡§" and "a run (mean of 3)" in cells[-1]
    assert "§ marks Welch's t-test" in md.read_text()
    # a rerun of the default seed keeps the seed dirs; nothing else reruns
    assert run("--seeds", "3", "--force", "method", "--only", "method", registry=registry) == 0
    assert calls()[9:] == ["method", "method/seed-1", "method/seed-2"]
    assert (outputs / "method" / "seed-1" / "metrics.json").exists()
    # seeds on disk are read by a plain table run, and a method whose seeds spread widely loses §
    noisy = seeded_registry(method_shift=0.3)
    assert run("--seeds", "3", "--only", "method", registry=noisy) == 0
    assert run("--table-only", registry=noisy) == 0
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.read_text().splitlines() if line.startswith("| ")}
    cell = rows["method, 3 seeds"].split(" | ")[2]
    assert cell.startswith("0.9450 ± 0.3000") and "†" in cell and "§" not in cell


def test_results_rows_restricts_the_table(env, tmp_path):
    run, calls, outputs, md = env
    registry = seeded_registry(method_shift=0.01)
    assert run("--seeds", "2", "--only", "derived", registry=registry) == 0  # method (2 seeds) and derived
    other = tmp_path / "some_rows.md"
    other.write_text("# Some rows\n")
    assert run("--table-only", "--rows", "derived", "--out-md", str(other), registry=registry) == 0
    rows = [line for line in other.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 2 and rows[1].startswith("| made from method, 2 seeds |")  # header + the one row
    assert "No marks: the bm25_negatives row has not run." in other.read_text()
    with pytest.raises(SystemExit):
        run("--table-only", "--rows", "nope", registry=registry)
