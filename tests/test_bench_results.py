"""`make bench` and `make results`: generated doc blocks, the results orchestrator's skip/resume logic on a
fake registry of tiny `python -c` commands, its table and significance marks, and bench.py's arithmetic
and markdown (its measurements need the real model and are not run here)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import dr.compare as compare_module
from dr.docs import describe_machine, format_duration, insert_after_intro, invocation, markers, replace_block

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


results = _load("results")
bench = _load("bench")


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


@pytest.mark.parametrize("doc,name,next_heading", [("BENCHMARKS.md", "bench", "\n## Corpus encoding ("),
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


def fake_bench_record(train_ratio: float, mfu_value: float) -> dict:
    st = {"queries_per_s": 1.0, "s_per_step": 16.0}
    return bench.finish({
        "date": "2025-01-01 10:00 +0000", "command": "python scripts/bench.py", "wall_s": 900.0, "quick": False,
        "load_before": "0.10 0.10 0.10", "load_after": "2.00 1.50 1.00",
        "machine": {"cpu": "Test CPU", "simd": ["avx2"], "logical_cores": 2, "ram_gb": 23.4, "torch_threads": 2},
        "sections": {
            "train": {"batch_size": 16, "query_max_length": 64, "passage_max_length": 256, "warmup_steps": 1,
                      "steps_timed": 5, "dr": {"queries_per_s": train_ratio, "s_per_step": 16 / train_ratio},
                      "sentence_transformers": st, "ratio_dr_over_st": train_ratio,
                      "command": "python scripts/bench_train.py --steps 5", "wall_s": 240.0},
            "encode": {"texts": "first 512 SciFact abstracts (title + text)", "batch_size": 64, "max_length": 256,
                       "dr": {"passages_per_s": 9.6, "seconds": 53.0}, "ratio_dr_over_st": 1.02,
                       "sentence_transformers": {"passages_per_s": 9.4, "seconds": 54.0},
                       "command": "python scripts/bench_encode.py --n 512"},
            "mfu": {"threads": 2, "matmul_flops_per_s": {"2048": 9e10, "4096": 1e11}, "peak_flops_per_s": 1e11,
                    "model_shape": [8192, 384, 1536], "model_shape_flops_per_s": 6e10, "trainable_params": 22_700_000,
                    "step_flops": mfu_value * 1e11 * 15.0, "step_flops_by_op": {"aten.mm": 1.0 * mfu_value * 1.5e12},
                    "step_s": 15.0, "steps_timed": 3, "achieved_flops_per_s": mfu_value * 1e11, "mfu": mfu_value},
            "refresh": {"refresh_every": 5, "max_steps": 15, "refreshes": 3, "miner_passage_len": 128, "depth": 200,
                        "index": "Flat", "corpus_passages": 5183, "queries": 729, "extrapolated": True,
                        "encoded_passages": 1000, "encode_s": 280.0, "query_s": 10.0, "search_s": 0.1,
                        "refresh_s": 290.1},
            "memory": {"skipped": True},
        },
    })


def test_bench_markdown_states_targets_and_only_known_reasons():
    short = bench.render(fake_bench_record(train_ratio=1.04, mfu_value=0.3))
    assert "**1.04** (target >= 1.20: not met)" in short and "Short of the 1.2x target" in short
    assert "**30%** (target >= 50%: not met)" in short and "Short of the 50% target" in short
    assert "(60% of peak)" in short
    # refresh overhead from the MFU section's step: 3 x 290.1 / (3 x 290.1 + 15 x 15)
    assert f"**{3 * 290.1 / (3 * 290.1 + 15 * 15):.0%}**" in short and "extrapolated: 1,000 sampled" in short
    assert "Not measured in this run (`--skip memory`)" in short
    assert "Below the 1.0 target" not in short  # 1.02 meets it
    met = bench.render(fake_bench_record(train_ratio=1.3, mfu_value=0.6))
    assert "Short of" not in met and "target >= 1.20: met" in met and "target >= 50%: met" in met
