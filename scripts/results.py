"""`make results`: rerun every experiment on the embedded default, then regenerate the results table of
docs/RESULTS.md and the figure docs/results.png.

    python scripts/results.py                     # run what is not done yet, then write the table and figure
    python scripts/results.py --dry-run           # the plan: every command and whether it is done
    python scripts/results.py --only star_adore   # that row and what it needs, then the table
    python scripts/results.py --force ance        # rerun ance (and whatever was made from it)
    python scripts/results.py --table-only        # table and figure from the run dirs as they are; runs nothing
    python scripts/results.py --seeds 3 --only bm25_negatives,ance   # + seeds 1 and 2 of those rows
    python scripts/results.py --table-only --rows bm25_negatives,ance --out-md FILE   # a table of some rows

Each experiment is one or more commands (`REGISTRY`; the DL19-pool column of star and ance is a separate
evaluation of their export, as in docs/RESULTS.md), run one after the other, each in its own process,
with `hydra.run.dir` set to OUTPUTS/NAME (a second command of a row: OUTPUTS/NAME-SUFFIX). After a
command exits 0 with a metrics.json holding the sets it must produce, this script writes `results.json` in
its run dir: the command, its wall time (measured around the process) and when it finished. A command is
skipped when that record names the same command and it finished after everything it depends on (earlier
commands of its row, the rows in `after`); so an interrupted `make results` resumes where it stopped, and a
changed command or `--force` reruns it and the rows made from it. A rerun starts from an empty run dir.

Seeds. `--seeds N` also runs seeds 1 .. N-1 of the chosen rows that train (the default seed, the
trainer config's, stays in OUTPUTS/NAME): every command of the row again, its training commands with
`trainer.seed=K`, each into its run dir's `seed-K/` subdir, and `{run:NAME}` of a seeded row pointing at
NAME's `seed-K/` (seed K of star + adore reads seed K of star). `trainer.seed` is the one seed of a run: it
seeds Python, numpy and torch, the dev split, the samplers, the miners, faiss's index and quantizer
training (configs). The table shows a row with several seeds on disk as mean ± sd over its seeds, its
marks from the tests of `dr.compare` on several runs: the paired tests on per-query values averaged over
seeds, and Welch's test over the per-seed figures (§) when both it and the baseline have two or more.

The table has one row per experiment: SciFact-test and DL19-pool RR@10 / nDCG@10 / R@100 (from each run's
metrics.json) and the wall time; nDCG@10 carries dr.compare's significance marks against the
bm25_negatives row (paired t-test and randomization test over per-query nDCG@10 from perquery/<set>.tsv,
or recomputed from runs/<set>.trec and the data config's qrels when a run has no per-query file). A row
whose commands have not all run says "not run" where its figures would be; nothing is filled in.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dr.compare import SEED_TEST, TESTS, RunResult, average_runs, compare, load_per_query, significance_marks
from dr.docs import describe_machine, format_duration, invocation, machine, today, write_block
from dr.eval.perquery import PerQuery
from dr.report import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SETS = ("scifact-test", "dl19-pool")
MEASURES = ("RR@10", "nDCG@10", "R@100")
TEST_MEASURE = "nDCG@10"
BASELINE = "bm25_negatives"
RECORD = "results.json"  # written by this script in a run dir once its command succeeded
BLOCK = "results"
PERMUTATIONS, ALPHA = 10_000, 0.05
_PLACEHOLDER = re.compile(r"\{run:([A-Za-z0-9_]+)\}")


@dataclass(frozen=True)
class Step:
    """One command of an experiment. `argv` starts with `python` (run as this interpreter); `{run:NAME}`
    stands for experiment NAME's run dir. `hydra.run.dir=<this step's dir>` is appended. `sets`: the eval
    sets its metrics.json must hold; `suffix`: '' for the experiment's own dir, else the dir NAME-SUFFIX."""

    argv: tuple[str, ...]
    sets: tuple[str, ...] = SETS
    suffix: str = ""
    seed_arg: str | None = None  # appended for seed K with {seed} filled in, e.g. "trainer.seed={seed}"


@dataclass(frozen=True)
class Experiment:
    """A row of the table: `steps` run in order, after every step of the experiments in `after`."""

    name: str
    label: str
    steps: tuple[Step, ...]
    after: tuple[str, ...] = ()


def _train(experiment: str, *overrides: str, sets: tuple[str, ...] = SETS) -> Step:
    return Step(("python", "-m", "dr.train", f"+experiment={experiment}", *overrides), sets,
                seed_arg="trainer.seed={seed}")


def _evaluate(*overrides: str, sets: tuple[str, ...] = SETS, suffix: str = "") -> Step:
    return Step(("python", "-m", "dr.evaluate", *overrides), sets, suffix)


def _dl19_of(name: str) -> Step:
    """The DL19-pool evaluation of a run that evaluated only SciFact-test (the experiment configs of star and
    ance leave the 30k-passage pool out of the run to fit a CPU budget; docs/RESULTS.md's commands)."""
    return _evaluate(f"model.name_or_path={{run:{name}}}/export", "eval_sets=[dl19-pool]",
                     sets=("dl19-pool",), suffix="dl19")


# The commands of docs/RESULTS.md ("Commands") and of the experiment configs' comments, in the order they
# must run: adore reads star's export (and the DL19-pool embeddings its evaluation cached), ar2 starts from
# bm25_negatives' export and its ranker row reranks with the ar2 run's exported ranker.
REGISTRY: tuple[Experiment, ...] = (
    Experiment("bm25", "BM25 (bm25s)", (_evaluate("retriever=bm25"),)),
    Experiment("zero_shot", "zero-shot all-MiniLM-L6-v2", (_evaluate(),)),
    Experiment("hybrid", "hybrid: BM25 + zero-shot all-MiniLM-L6-v2, z-score fusion of each top 100",
               (_evaluate("retriever=hybrid"),)),
    Experiment("inbatch", "inbatch (random in-batch negatives)", (_train("inbatch"),)),
    Experiment("bm25_negatives", "bm25_negatives (BM25 + in-batch negatives)", (_train("bm25_negatives"),)),
    Experiment("star", "star (static negatives of the starting model)",
               (_train("star", sets=("scifact-test",)), _dl19_of("star"))),
    Experiment("star_adore", "star + adore (query tower vs star's fixed index)",
               (_train("adore", "model.name_or_path={run:star}/export"),), after=("star",)),
    Experiment("ance", "ance (refreshed dense negatives)", (_train("ance", sets=("scifact-test",)), _dl19_of("ance"))),
    Experiment("teacher_rerank", "SciFact cross-encoder teacher reranking BM25 top 100",
               (_evaluate("retriever=rerank"),)),
    Experiment("tas_balanced", "tas_balanced (the main job): fusion teacher, query tower vs fixed passages, anchor term",
               (_train("tas_balanced"),)),
    Experiment("tas_balanced_ce", "tas_balanced with the cross-encoder teacher (teacher=scifact), same recipe",
               (_train("tas_balanced", "teacher=scifact"),)),
    Experiment("jpq", "jpq (OPQ+PQ, 48 bytes/passage)", (_train("jpq"),)),
    Experiment("hcl", "hcl: bm25_negatives with the hard-negative-weighted loss (Robinson et al. 2021)",
               (_train("hcl"),)),
    Experiment("xbm", "xbm: bm25_negatives + cross-batch memory of 8 steps (Wang et al. 2020)", (_train("xbm"),)),
    Experiment("ngame", "ngame: bm25_negatives in negative-aware batches (Dahiya et al. 2023)", (_train("ngame"),)),
    Experiment("curriculum", "curriculum: BM25 negative ranks 50-99 moving to 0-9", (_train("curriculum"),)),
    Experiment("xbm_ngame", "xbm + ngame: negative-aware batches with a cross-batch memory",
               (_train("xbm_ngame"),)),
    Experiment("matryoshka", "matryoshka: bm25_negatives with the loss also on 256/128/64 dims, at 384",
               (_train("matryoshka"),)),
    *(Experiment(f"{name}_{dim}", f"{label} truncated to {dim} dims",
                 (_evaluate(f"model.name_or_path={{run:{name}}}/export", f"model.truncate_dim={dim}",
                            "eval_sets=[scifact-test]", sets=("scifact-test",)),), after=(name,))
      for name, label in (("matryoshka", "matryoshka"), ("bm25_negatives", "bm25_negatives")) for dim in (256, 128, 64)),
    Experiment("lora", "lora: bm25_negatives training LoRA adapters (r 16) instead of all weights", (_train("lora"),)),
    *(Experiment(name, label, (_train("ance", *overrides, sets=("scifact-test",)), _dl19_of(name)))
      for name, label, overrides in (
          ("ance_fn_positive", "ance, candidates above 0.95 x the positive's score dropped",
           ("miner.fn_fraction=0.95",)),
          ("ance_fn_fusion", "ance, candidates the fusion teacher scores above the positive dropped",
           ("miner.fn_teacher=fusion", "miner.fn_teacher_above_positive=true")),
          ("ance_denoise", "ance, 20 candidates a refresh drawn by the fusion teacher's odds of not beating the "
           "positive",
           ("miner.fn_teacher=fusion", "miner.denoise=true", "miner.per_query=20")),
          ("ance_fn_ranker", "ance, candidates the SciFact cross-encoder scores above the positive dropped",
           ("ranker=scifact_teacher", "miner.fn_teacher=ranker", "miner.fn_teacher_above_positive=true")))),
    Experiment("query_distill", "query_distill: a 3-layer query tower distilled from all-MiniLM-L6-v2",
               (_train("query_distill"),)),
    Experiment("query_distill_2", "query_distill with a 2-layer query tower",
               (_train("query_distill", "objective.student_layers=2"),)),
    Experiment("query_distill_4000", "query_distill, 3 layers, 4,000 steps (the dev curve still rose at 1,000)",
               (_train("query_distill", "trainer.max_steps=4000", "trainer.eval_every=500",
                       "trainer.save_every=500"),)),
    Experiment("ar2", "ar2 retriever (from bm25_negatives)",
               (_train("ar2", "model.name_or_path={run:bm25_negatives}/export"),), after=("bm25_negatives",)),
    Experiment("ar2_ranker", "ar2 ranker reranking the ar2 retriever's top 100",
               (_evaluate("retriever=rerank_dense", "model.name_or_path={run:ar2}/export",
                          "ranker.name_or_path={run:ar2}/export/ranker"),), after=("ar2",)),
)


class StepFailed(RuntimeError):
    """A command exited non-zero or left no complete metrics.json; the message names the experiment."""


@dataclass
class StepState:
    """Where one step stands: `done` (skipped when running) or the reason it must run."""

    experiment: Experiment
    index: int
    step: Step
    run_dir: Path
    argv: list[str]  # as displayed and recorded: starts with "python"
    seed: int | None = None  # None: the default seed (OUTPUTS/NAME), else K (its seed-K/ subdir)
    done: bool = False
    reason: str = ""
    finished: float | None = None  # time.time() when the recorded run finished
    wall_s: float | None = None

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    @property
    def key(self) -> str:
        return f"{self.experiment.name}[{self.index}]" + (f"@seed-{self.seed}" if self.seed else "")


def check_registry(experiments: Sequence[Experiment]) -> None:
    """Unique names, known dependencies listed before their dependants, `{run:NAME}` only of NAME itself or
    of a dependency; ValueError naming the experiment otherwise."""
    seen: set[str] = set()
    for exp in experiments:
        if exp.name in seen:
            raise ValueError(f"experiment {exp.name!r} is listed twice")
        for dep in exp.after:
            if dep not in seen:
                raise ValueError(f"experiment {exp.name!r} runs after {dep!r}, which is not listed before it")
        for step in exp.steps:
            for ref in _PLACEHOLDER.findall(" ".join(step.argv)):
                if ref != exp.name and ref not in exp.after:
                    raise ValueError(f"experiment {exp.name!r} reads {{run:{ref}}} but does not run after {ref!r}")
        if len({s.suffix for s in exp.steps}) < len(exp.steps):
            raise ValueError(f"experiment {exp.name!r}: each step needs its own suffix (run dir)")
        seen.add(exp.name)


def run_dir(outputs: Path, name: str, step: Step | None = None, seed: int | None = None) -> Path:
    """OUTPUTS/NAME, or OUTPUTS/NAME-SUFFIX for a step with a suffix; its `seed-K/` subdir for seed K."""
    path = outputs / (f"{name}-{step.suffix}" if step is not None and step.suffix else name)
    return path / f"seed-{seed}" if seed else path


def seeded(experiments: Sequence[Experiment]) -> set[str]:
    """The experiments that have seeds: those with a step that takes one, and those made from them."""
    found: set[str] = set()
    for exp in experiments:
        if any(step.seed_arg for step in exp.steps) or found & set(exp.after):
            found.add(exp.name)
    return found


def resolve_argv(step: Step, exp: Experiment, outputs: Path, seed: int | None = None,
                 seeded_names: set[str] = frozenset()) -> list[str]:
    """The step's command with `{run:NAME}` filled in (seed K of a seeded NAME for seed K), the seed's
    override for seed K, and `hydra.run.dir` appended."""
    def ref(m: re.Match) -> str:
        return str(run_dir(outputs, m.group(1), seed=seed if m.group(1) in seeded_names else None))

    argv = [_PLACEHOLDER.sub(ref, a) for a in step.argv]
    if seed and step.seed_arg:
        argv.append(step.seed_arg.format(seed=seed))
    return argv + [f"hydra.run.dir={run_dir(outputs, exp.name, step, seed)}"]


def seeds_on_disk(outputs: Path, exp: Experiment) -> list[int]:
    """The K of the `seed-K/` subdirs of the experiment's first run dir."""
    base = run_dir(outputs, exp.name, exp.steps[0]) if exp.steps else None
    if base is None or not base.is_dir():
        return []
    return sorted(int(d.name[5:]) for d in base.glob("seed-*") if d.is_dir() and d.name[5:].isdigit())


def read_record(path: Path) -> dict | None:
    """The `results.json` of a run dir, or None when absent or unreadable (then the step reruns)."""
    try:
        record = json.loads((path / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def read_metrics(path: Path) -> dict[str, dict[str, float]] | None:
    try:
        metrics = json.loads((path / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if isinstance(metrics, dict) else None


def missing_sets(path: Path, sets: Sequence[str]) -> list[str]:
    """The sets of `sets` that the run dir's metrics.json lacks (all of them without a readable file)."""
    metrics = read_metrics(path) or {}
    return [s for s in sets if not isinstance(metrics.get(s), dict) or TEST_MEASURE not in metrics[s]]


def plan(experiments: Sequence[Experiment], outputs: Path, force: set[str] = frozenset(),
         seeds: dict[str, Sequence[int]] | None = None) -> list[StepState]:
    """Every step in run order with whether it is done: each experiment's default seed, then its seeds
    `seeds[name]` (K >= 1; only seeded experiments have them). A step is done when its record names the same
    command, its metrics.json has its sets, it is not forced, and every step it depends on (of the same seed)
    is done and finished before it."""
    check_registry(experiments)
    with_seeds = seeded(experiments)
    states: list[StepState] = []
    by_exp: dict[tuple[str, int | None], list[StepState]] = {}
    for exp in experiments:
        extra = sorted(set((seeds or {}).get(exp.name, ()))) if exp.name in with_seeds else []
        for seed, (i, step) in [(k, x) for k in [None, *extra] for x in enumerate(exp.steps)]:
            path = run_dir(outputs, exp.name, step, seed)
            state = StepState(exp, i, step, path, resolve_argv(step, exp, outputs, seed, with_seeds), seed)
            upstream = [s for dep in exp.after for s in by_exp.get((dep, seed if dep in with_seeds else None), [])]
            upstream += by_exp.get((exp.name, seed), [])
            record = read_record(path)
            if record is not None:
                state.finished, state.wall_s = record.get("finished"), record.get("wall_s")
            lacking = missing_sets(path, step.sets)
            pending = [s for s in upstream if not s.done]
            newer = [s for s in upstream if s.finished and (state.finished is None or s.finished > state.finished)]
            if exp.name in force or "all" in force:
                state.reason = "forced (--force)"
            elif record is None:
                state.reason = "not run" if not path.exists() else f"no {RECORD} (not finished by this script)"
            elif record.get("command") != state.command:
                state.reason = f"command changed (was: {record.get('command')})"
            elif lacking:
                state.reason = f"metrics.json lacks {', '.join(lacking)}"
            elif pending:
                state.reason = f"{pending[0].key} must run first"
            elif newer:
                state.reason = f"{newer[0].key} ran after it"
            else:
                state.done = True
            states.append(state)
            by_exp.setdefault((exp.name, seed), []).append(state)
    return states


def select(experiments: Sequence[Experiment], only: Sequence[str]) -> list[Experiment]:
    """The experiments named in `only` and those they run after (in registry order); all when empty."""
    if not only:
        return list(experiments)
    by_name = {e.name: e for e in experiments}
    unknown = [n for n in only if n not in by_name]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; known: {', '.join(by_name)}")
    wanted: set[str] = set()
    stack = list(only)
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(by_name[name].after)
    return [e for e in experiments if e.name in wanted]


def format_plan(states: Sequence[StepState]) -> str:
    lines = []
    for s in states:
        status = "done, skip" if s.done else f"run ({s.reason})"
        lines.append(f"{s.key:<20} {status}\n    {s.command}")
    return "\n".join(lines)


def run_step(state: StepState, outputs: Path) -> None:
    """Run one step in a fresh run dir, its output to `results.log` there; write its record on success,
    else raise StepFailed naming the experiment, the command and the log's last lines."""
    path = state.run_dir
    if path.exists():
        if outputs.resolve() not in path.resolve().parents:
            raise StepFailed(f"{state.key}: refusing to clear {path}, which is outside {outputs}")
        for entry in path.iterdir():  # the other seeds' subdirs are theirs to keep
            if state.seed is None and entry.is_dir() and re.fullmatch(r"seed-\d+", entry.name):
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    path.mkdir(parents=True, exist_ok=True)
    log = path / "results.log"
    argv = [sys.executable if i == 0 and a == "python" else a for i, a in enumerate(state.argv)]
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    lacking = missing_sets(path, state.step.sets)
    if proc.returncode != 0 or lacking:
        why = (f"exited with code {proc.returncode}" if proc.returncode != 0
               else f"exited 0 but its metrics.json lacks {', '.join(lacking)}")
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-30:])
        raise StepFailed(f"experiment {state.experiment.name!r} failed: {why}\n  command: {state.command}\n"
                         f"  log: {log}\n--- last lines of the log ---\n{tail}")
    state.done, state.finished, state.wall_s = True, time.time(), wall
    (path / RECORD).write_text(json.dumps({"experiment": state.experiment.name, "step": state.index,
                                           "command": state.command, "wall_s": wall, "finished": state.finished,
                                           "finished_at": today()}, indent=2) + "\n")


def _say(message: str) -> None:
    print(message, flush=True)  # progress shows up at once under make or a pipe


def execute(states: Sequence[StepState], outputs: Path, log: Callable[[str], None] = _say) -> int:
    """Run the steps that are not done, in order; returns how many ran. `plan` already marks every step
    downstream of one that must run, so nothing is decided here."""
    todo = [s for s in states if not s.done]
    for n, s in enumerate(todo, start=1):
        log(f"[{n}/{len(todo)}] {s.key}: {s.command}  (log: {s.run_dir / 'results.log'})")
        run_step(s, outputs)
        log(f"    done in {format_duration(s.wall_s)}")
    return len(todo)


# ---------------------------------------------------------------------------------------------- table


@dataclass
class Row:
    """One experiment's figures as found on disk; `metrics` has only the sets its finished steps made."""

    experiment: Experiment
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    per_query: dict[str, PerQuery] = field(default_factory=dict)
    wall_s: float | None = 0.0
    steps_done: int = 0
    stale: bool = False  # figures on disk, but not from the current commands
    steps_taken: int | None = None  # trainer.max_steps of its training run, from config.yaml
    cached: int = 0  # corpus encodings its commands took from the dr cache instead of computing
    seed: int | None = None  # None: the default seed
    # With seeds: every complete run (the default seed's first) averaged by dr.compare.average_runs; then
    # `metrics` and `per_query` are that mean and `wall_s` the mean wall time of a run
    combined: RunResult | None = None

    @property
    def ran(self) -> bool:
        return self.steps_done > 0

    @property
    def n_seeds(self) -> int:
        return self.combined.n_runs if self.combined is not None else 1

    def result(self) -> RunResult:
        return self.combined or RunResult(self.experiment.name, Path(), self.metrics, self.per_query)


def _max_steps(path: Path) -> int | None:
    try:
        import yaml

        cfg = yaml.safe_load((path / "config.yaml").read_text())
        return int(cfg["trainer"]["max_steps"])
    except (OSError, KeyError, TypeError, ValueError, ImportError):
        return None


def _timings(run_dir: Path) -> dict:
    """A run's timings.json ({} when missing or unreadable: older runs have none)."""
    try:
        data = json.loads((run_dir / "timings.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cache_hits(run_dir: Path, timings: dict) -> int:
    """Corpus encodings a run took from the dr embedding cache that an earlier process had written:
    timings.json's `embedding_cache_reused` (dr.train and dr.evaluate record it). Run dirs made before dr
    recorded it: dr.evaluate's `cache_hits` plus the miner refreshes (refresh.jsonl) that found their
    embeddings cached, which misses a training run's evaluations."""
    if "embedding_cache_reused" in timings:
        return int(timings["embedding_cache_reused"] or 0)
    refreshes = read_jsonl(run_dir / "refresh.jsonl")
    return int(timings.get("cache_hits") or 0) + sum(bool(r.get("cache_hit")) for r in refreshes)


def collect(experiments: Sequence[Experiment], states: Sequence[StepState]) -> list[Row]:
    """Each experiment's figures from the run dirs of its steps that have them (a later step's sets
    override an earlier one's), with the summed wall time (the record's, else timings.json's). An experiment
    whose default seed and at least one more seed ran every step is one row of their mean (`combine_seeds`)."""
    rows = []
    for exp in experiments:
        seeds = sorted({s.seed for s in states if s.experiment.name == exp.name and s.seed})
        row = collect_seed(exp, states, None)
        runs = [row] + [collect_seed(exp, states, k) for k in seeds]
        rows.append(combine_seeds(row, [r for r in runs[1:] if r.steps_done == len(exp.steps)]))
    return rows


def combine_seeds(row: Row, others: Sequence[Row]) -> Row:
    """`row` (the default seed) with the complete runs of its other seeds: mean figures, per-query values
    averaged over seeds, the mean wall time; unchanged when it has no complete run of another seed."""
    if not others or row.steps_done < len(row.experiment.steps):
        return row
    runs = [row, *others]
    row.combined = average_runs([RunResult(f"{row.experiment.name}@{r.seed or 'default'}", Path(), r.metrics,
                                           r.per_query) for r in runs], row.experiment.name)
    row.metrics, row.per_query = row.combined.metrics, row.combined.per_query
    walls = [r.wall_s for r in runs]
    row.wall_s = None if None in walls else sum(walls) / len(walls)
    row.stale |= any(r.stale for r in others)
    row.cached = max(r.cached for r in runs)
    return row


def collect_seed(exp: Experiment, states: Sequence[StepState], seed: int | None) -> Row:
    """One experiment's figures for one seed (None: the default)."""
    by_key = {(s.index, s.seed): s for s in states if s.experiment.name == exp.name}
    row = Row(exp, seed=seed)
    for i, step in enumerate(exp.steps):
        state = by_key[(i, seed)]
        if missing_sets(state.run_dir, step.sets):
            row.wall_s = None
            continue
        metrics = read_metrics(state.run_dir) or {}
        row.steps_done += 1
        row.stale |= not state.done
        for s in step.sets:
            row.metrics[s] = metrics[s]
            values = load_per_query(state.run_dir, s)
            if values is not None:
                row.per_query[s] = values
        timings = _timings(state.run_dir)
        wall = state.wall_s
        if wall is None:
            try:
                wall = float(timings["wall_s"])
            except (KeyError, ValueError, TypeError):
                wall = None
        row.wall_s = None if wall is None or row.wall_s is None else row.wall_s + wall
        row.cached += cache_hits(state.run_dir, timings)
        if row.steps_taken is None and step.argv[1:3] == ("-m", "dr.train"):
            row.steps_taken = _max_steps(state.run_dir)
    return row


def significance(rows: Sequence[Row], baseline: str = BASELINE) -> dict[tuple[str, str], str]:
    """`{(experiment, set): marks}` of per-query nDCG@10 against the baseline row (dr.compare's tests)."""
    base = next((r for r in rows if r.experiment.name == baseline and r.ran), None)
    if base is None:
        return {}
    marks = {}
    for row in rows:
        if row is base or not row.ran:
            continue
        tests = (*TESTS, SEED_TEST) if min(base.n_seeds, row.n_seeds) > 1 else TESTS
        for c in compare([base.result(), row.result()], TEST_MEASURE, tests, PERMUTATIONS, seed=0):
            marks[(row.experiment.name, c.eval_set)] = significance_marks(c, ALPHA)
    return marks


def label(row: Row) -> str:
    text = row.experiment.label
    if row.steps_taken is not None:
        text += f", {row.steps_taken} steps"
    if row.n_seeds > 1:
        text += f", {row.n_seeds} seeds"
    return text + (" *" if row.stale else "")


def format_table(rows: Sequence[Row], marks: dict[tuple[str, str], str], baseline: str = BASELINE) -> str:
    """One markdown table: method rows, SciFact-test and DL19-pool RR@10 / nDCG@10 / R@100, wall time."""
    head = ["method"] + [f"{s} {m}" if j == 0 else m for s in SETS for j, m in enumerate(MEASURES)] + ["wall time"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for row in rows:
        cells = []
        for s in SETS:
            values = row.metrics.get(s)
            if values is None:
                cells += ["not run"] + [""] * (len(MEASURES) - 1)
                continue
            for m in MEASURES:
                mark = marks.get((row.experiment.name, s), "") if m == TEST_MEASURE else ""
                sd = row.combined.sd(s, m) if row.combined is not None and m in values else None
                spread = f" ± {sd:.4f}" if sd is not None else ""
                cells.append(f"{values[m]:.4f}{spread}{mark}" if m in values else "-")
        n = len(row.experiment.steps)
        if not row.ran:
            wall = "not run"
        elif row.steps_done < n:
            wall = f"{row.steps_done} of {n} commands run"
        else:
            wall = format_duration(row.wall_s) + (f" a run (mean of {row.n_seeds})" if row.n_seeds > 1 else "")
            if row.cached:
                wall += f" ({row.cached} corpus encoding{'s' if row.cached > 1 else ''} from the cache)"
        name = label(row) + (" (baseline)" if row.experiment.name == baseline else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall} |")
    return "\n".join(lines)


def plot(rows: Sequence[Row], marks: dict[tuple[str, str], str], path: Path, baseline: str = BASELINE) -> Path:
    """Grouped bars: one group per method (registry order), one bar per eval set's nDCG@10, the value and
    its marks on top, dashed lines at the baseline's values; "not run" where a method has no figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / len(SETS)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.0 + 0.95 * len(rows)), 5.5))
    base = next((r for r in rows if r.experiment.name == baseline), None)
    for j, s in enumerate(SETS):
        xs = [i + (j - (len(SETS) - 1) / 2) * width for i in range(len(rows))]
        values = [r.metrics.get(s, {}).get(TEST_MEASURE, float("nan")) for r in rows]
        bars = ax.bar(xs, values, width, label=s, color=f"C{j}")
        for bar, row, v in zip(bars, rows, values):
            x = bar.get_x() + bar.get_width() / 2
            if v == v:  # not NaN
                ax.annotate(f"{v:.3f}{marks.get((row.experiment.name, s), '')}", (x, v), ha="center", va="bottom",
                            fontsize=7, rotation=90, xytext=(0, 2), textcoords="offset points")
            else:
                ax.text(x, 0.02, "not run", ha="center", va="bottom", fontsize=7, rotation=90, color="0.4")
        if base is not None and TEST_MEASURE in base.metrics.get(s, {}):
            ax.axhline(base.metrics[s][TEST_MEASURE], color=f"C{j}", linestyle="--", linewidth=0.8, alpha=0.7)
    ax.set_xticks(range(len(rows)), [r.experiment.name for r in rows], rotation=35, ha="right", fontsize=9)
    ax.set_xlim(-0.6, len(rows) - 0.4)  # bars of NaN do not widen the axis: keep the "not run" groups in view
    ax.set_ylabel(TEST_MEASURE)
    top = max([v.get(TEST_MEASURE, 0.0) for r in rows for v in r.metrics.values()] or [1.0])
    ax.set_ylim(0, min(1.05, top * 1.2 + 0.02))
    ax.set_title(f"{TEST_MEASURE} per method on the embedded default; dashed: {baseline}. "
                 f"Marks: p < {ALPHA} vs {baseline} († t-test, ‡ randomization)", fontsize=9)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="eval set", title_fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def block(rows: Sequence[Row], marks: dict, states: Sequence[StepState], command: str, machine_line: str,
          figure: str | None, baseline: str = BASELINE) -> str:
    """The generated block of docs/RESULTS.md: provenance, the table, how to read it, figure, commands."""
    finished = sorted(s.finished for s in states if s.finished)
    span = ""
    if finished:
        first, last = (time.strftime("%Y-%m-%d", time.localtime(t)) for t in (finished[0], finished[-1]))
        span = f" from runs made {first}" + (f" to {last}" if last != first else "")
    queries = {s: max((len(r.per_query.get(s, {}).get(TEST_MEASURE, {})) for r in rows), default=0) for s in SETS}
    lines = [
        "<!-- generated by scripts/results.py (make results): edit the script, not this block -->",
        f"Generated {today()} by `{command}`{span}, on {machine_line}. Each command ran alone in its own "
        "process; a row's wall time is the sum of its commands' wall times, measured around each process "
        "(loading, training, evaluation; on a CPU mostly corpus encoding). Dense evaluations reuse corpus "
        "embeddings from the dr cache (`$DR_CACHE`) when the same weights were encoded before, so a row's wall "
        "time depends on what ran before it; the wall time column says how many corpus encodings (an "
        "evaluation's or a miner refresh's) a row took from the cache.",
        "",
        format_table(rows, marks, baseline),
        "",
        f"Marks on nDCG@10: † paired t-test, ‡ paired randomization test ({PERMUTATIONS:,} sign flips, seed 0), "
        f"two-sided p < {ALPHA} against {baseline}, over per-query nDCG@10 "
        f"({', '.join(f'{n} {s} queries' for s, n in queries.items() if n)}). "
        "A row without marks is not distinguishable from the baseline at this level.",
    ]
    if any(r.n_seeds > 1 for r in rows):
        lines.append(
            "A row of several seeds shows mean ± sample sd over its seeds (its wall time: the mean of a run); its "
            "marks come from per-query nDCG@10 averaged over its seeds, and, when the baseline has several seeds "
            f"too, § marks Welch's t-test over the per-seed nDCG@10 (p < {ALPHA}), the test that sees training "
            "variance (`python -m dr.compare --seeds`). An effect holds across seeds when it carries †‡§.")
    if not any(r.experiment.name == baseline and r.ran for r in rows):
        lines.append(f"No marks: the {baseline} row has not run.")
    if any(r.stale for r in rows):
        lines.append("Rows marked * are figures from run dirs that the current commands did not make (an older "
                     "command, or made before a row they depend on was rerun); `make results` reruns them.")
    if figure:
        lines += ["", f"![nDCG@10 of each method on SciFact-test and DL19-pool]({figure})"]
    lines += ["", "Commands (one process each, in this order; `python scripts/results.py --dry-run` lists what "
              "is done):", ""]
    lines += ["    " + line for s in states for line in s.command.splitlines()]  # one indented code block
    return "\n".join(lines)


def names(values: Sequence[str]) -> list[str]:
    """`["a,b", "c"]` -> `["a", "b", "c"]` (repeatable, comma-separated options)."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def main(argv: Sequence[str] | None = None, experiments: Sequence[Experiment] = REGISTRY) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/results.py", description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=Path, default=Path("outputs/results"), help="root of the run dirs")
    parser.add_argument("--only", action="append", default=[], metavar="NAMES",
                        help="comma-separated experiments to run (plus what they depend on); the table keeps every row")
    parser.add_argument("--force", action="append", default=[], metavar="NAMES",
                        help="comma-separated experiments to rerun even if done ('all' for every one)")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="also run seeds 1 .. N-1 of the chosen rows that train (into their seed-K/ subdirs)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--table-only", action="store_true", help="run nothing; regenerate the table and figure")
    parser.add_argument("--rows", action="append", default=[], metavar="NAMES",
                        help="comma-separated experiments the table shows (default: every one), e.g. with "
                             "--out-md elsewhere for a table of some rows")
    parser.add_argument("--out-md", type=Path, default=ROOT / "docs" / "RESULTS.md")
    parser.add_argument("--out-png", type=Path, default=ROOT / "docs" / "results.png")
    args = parser.parse_args(argv)
    try:
        chosen = select(experiments, names(args.only))
        force = set(names(args.force))
        unknown = force - {e.name for e in experiments} - {"all"}
        if unknown:
            raise ValueError(f"--force: unknown experiment(s) {sorted(unknown)}")
        if args.seeds < 1:
            raise ValueError("--seeds must be >= 1 (1: the default seed only)")
        states = plan(chosen, args.outputs, force, {e.name: range(1, args.seeds) for e in chosen})
    except ValueError as e:
        parser.error(str(e))
    if args.dry_run or not args.table_only:
        print(format_plan(states))
    if args.dry_run:
        return 0
    if not args.table_only:
        try:
            ran = execute(states, args.outputs)
        except StepFailed as e:
            print(f"\nerror: {e}", file=sys.stderr)
            print("The table was not regenerated; fix the command and rerun (finished commands are skipped).",
                  file=sys.stderr)
            return 1
        print(f"{ran} command(s) ran, {len(states) - ran} were done already")
    wanted = set(names(args.rows))
    unknown = wanted - {e.name for e in experiments}
    if unknown:
        parser.error(f"--rows: unknown experiment(s) {sorted(unknown)}")
    shown = select(experiments, sorted(wanted)) if wanted else list(experiments)  # with what they are made from
    on_disk = {e.name: seeds_on_disk(args.outputs, e) for e in shown}
    all_states = plan(shown, args.outputs, seeds=on_disk)  # every row and seed, as found on disk now
    rows = [r for r in collect(shown, all_states) if not wanted or r.experiment.name in wanted]
    all_states = [st for st in all_states if not wanted or st.experiment.name in wanted]
    marks = significance(rows)
    figure = None
    try:
        png = plot(rows, marks, args.out_png)
        figure = os.path.relpath(png, args.out_md.parent)
        print(f"figure: {png}")
    except ImportError:
        print("matplotlib is not installed: no figure", file=sys.stderr)
    command = invocation("scripts/results.py", argv if argv is not None else sys.argv[1:], "results")
    text = block(rows, marks, all_states, command, describe_machine(machine()), figure)
    print(text)
    print(f"table: {write_block(args.out_md, BLOCK, text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
