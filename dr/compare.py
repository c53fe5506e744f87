"""Compare the final metrics of several runs, with paired per-query significance against the first.

    python -m dr.compare outputs/bm25_negatives outputs/ance outputs/star_adore --out compare.png
    python -m dr.compare base/s1,base/s2,base/s3 ance/s1,ance/s2,ance/s3     # several seeds per method
    python -m dr.compare outputs/results/bm25_negatives outputs/results/ance --seeds   # + their seed-K/ dirs

A run dir is the output of `dr.train` or `dr.evaluate`: `metrics.json` (`{set: {measure: value}}`) and
`perquery/<set>.tsv` (written by the evaluator at the final evaluation; see `dr.eval.perquery`). The
tests are two-sided and paired by query: Student's paired t-test (scipy) and a sign-flip randomization
test (exact over all 2^n flips when n is small, else `permutations` random flips with a fixed seed).

Several runs of one method (seeds; comma-separated, or a run dir and its `seed-K/` subdirs with `--seeds`)
are one method: its figure is the mean over its runs (with the sd beside it) and its per-query values are
averaged over its runs before the paired tests. Those tests then see query variance with training noise
damped by the averaging, but not training variance itself: with one baseline run a method can look
significant only because that one run drew a lucky seed. So when both sides have two runs or more a third
test is added, Welch's unequal-variance t-test over the per-run figures (the runs of a method are its
samples; seeds of different methods are not paired), which sees training variance and nothing else. An
effect "holds across seeds" when the paired tests on the averaged queries and the Welch test over seeds
all give p < alpha: the first say it is not a few queries, the last that it is not a lucky seed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dr.eval.perquery import PerQuery, read_per_query

TESTS = ("t", "randomization")
SEED_TEST = "seeds"  # Welch's t-test over the per-run figures of methods with several runs
MARKS = {"t": "†", "randomization": "‡", SEED_TEST: "§"}
TITLES = {"t": "t-test", "randomization": "randomization", SEED_TEST: "Welch over seeds"}


@dataclass
class RunResult:
    name: str
    path: Path
    metrics: dict[str, dict[str, float]]  # {set: {measure: value}}; of several runs, the mean over them
    per_query: dict[str, PerQuery]  # {set: {measure: {qid: value}}}, the sets that have a perquery file
    members: list[RunResult] = field(default_factory=list)  # the runs (seeds) averaged here; [] for one run

    @property
    def n_runs(self) -> int:
        return len(self.members) or 1

    def values(self, eval_set: str, measure: str) -> list[float]:
        """The figure of each run (each seed) on `eval_set`, those that have it."""
        return [r.metrics[eval_set][measure] for r in (self.members or [self])
                if measure in r.metrics.get(eval_set, {})]

    def sd(self, eval_set: str, measure: str) -> float | None:
        """Sample standard deviation over the runs (None for fewer than 2)."""
        v = self.values(eval_set, measure)
        return float(np.std(v, ddof=1)) if len(v) > 1 else None


def average_runs(runs: Sequence[RunResult], name: str | None = None) -> RunResult:
    """Several runs of one method (e.g. seeds) as one RunResult: for each set and measure that every run has,
    the mean of their figures; per-query values averaged over the runs, a query missing from a run counted
    as 0 there (as `paired` does). One run is returned as it is.

    >>> a = RunResult("s1", Path("s1"), {"t": {"m": 0.5}}, {"t": {"m": {"q1": 1.0, "q2": 0.0}}})
    >>> b = RunResult("s2", Path("s2"), {"t": {"m": 0.25}}, {"t": {"m": {"q1": 0.5}}})
    >>> both = average_runs([a, b], "method")
    >>> both.metrics, both.per_query, both.n_runs
    ({'t': {'m': 0.375}}, {'t': {'m': {'q1': 0.75, 'q2': 0.0}}}, 2)
    """
    if not runs:
        raise ValueError("no runs to average")
    if len(runs) == 1:
        return runs[0]
    sets = [s for s in runs[0].metrics if all(s in r.metrics for r in runs)]
    metrics = {s: {m: float(np.mean([r.metrics[s][m] for r in runs])) for m in runs[0].metrics[s]
                   if all(m in r.metrics[s] for r in runs)} for s in sets}
    per_query: dict[str, PerQuery] = {}
    for s in sets:
        if not all(s in r.per_query for r in runs):
            continue
        per_query[s] = {}
        for m in runs[0].per_query[s]:
            if not all(m in r.per_query[s] for r in runs):
                continue
            qids = list(dict.fromkeys(q for r in runs for q in r.per_query[s][m]))
            per_query[s][m] = {q: float(np.mean([r.per_query[s][m].get(q, 0.0) for r in runs])) for q in qids}
    return RunResult(name or runs[0].name, runs[0].path, metrics, per_query, list(runs))


def welch_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value of mean(y) = mean(x) (two or more values each). Both without
    variance: p is 1 when the means are equal and 0 otherwise (scipy would return nan)."""
    if min(len(x), len(y)) < 2:
        raise ValueError("Welch's test needs at least two runs on each side")
    if np.ptp(x) <= 1e-12 and np.ptp(y) <= 1e-12:
        return 1.0 if abs(float(np.mean(y) - np.mean(x))) <= 1e-12 else 0.0
    from scipy.stats import ttest_ind

    return float(ttest_ind(y, x, equal_var=False).pvalue)


@dataclass
class Comparison:
    """One run against the baseline on one eval set and measure; p-values None when not computed."""

    eval_set: str
    run: str
    delta: float | None = None  # mean(run) - mean(baseline) over the paired queries
    queries: int = 0
    missing_base: int = 0  # queries only the run has, counted as 0 for the baseline
    missing_run: int = 0  # queries only the baseline has, counted as 0 for the run
    p: dict[str, float] | None = None
    note: str = ""


def qrels_source(set_name: str) -> tuple[Path, int] | None:
    """(qrels path, rel_level) of an eval set of configs/data/scifact.yaml (the embedded default)."""
    from omegaconf import OmegaConf

    from dr.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    cfg = OmegaConf.load(Path(CONFIG_DIR) / "data" / "scifact.yaml")
    spec = cfg.eval_sets.get(set_name)
    if spec is None:
        return None
    path = spec.qrels if "qrels" in spec else f"{spec.root}/qrels/{spec.split}.tsv"
    return Path(path), int(spec.get("rel_level", 1))


def load_per_query(path: Path, set_name: str, measure: str = "nDCG@10") -> PerQuery | None:
    """perquery/<set>.tsv of a run dir, else the set's per-query nDCG@10 recomputed from runs/<set>.trec
    and the qrels file of the embedded default's set of that name (runs made before per-query files
    existed), else None."""
    tsv = path / "perquery" / f"{set_name}.tsv"
    if tsv.exists():
        return read_per_query(tsv)
    trec = path / "runs" / f"{set_name}.trec"
    source = qrels_source(set_name) if trec.exists() else None
    if source is None:
        return None
    from dr.data.errors import ReadPolicy
    from dr.data.qrels import read_qrels
    from dr.data.runs import read_trec_run
    from dr.eval.measures import per_query

    qrels = read_qrels(source[0], ReadPolicy(strict=True))
    return {measure: per_query(read_trec_run(trec), qrels, measure, source[1])}


def load_run(path: str | Path) -> RunResult:
    """A run dir's final metrics and per-query values; ValueError naming the dir when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: no such directory")
    metrics_path = path / "metrics.json"
    if not metrics_path.exists():
        raise ValueError(f"{path}: not a run dir (no metrics.json; give an output dir of dr.train or dr.evaluate)")
    try:
        metrics = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{metrics_path}:{e.lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
        raise ValueError(f"{metrics_path}: expected {{set: {{measure: value}}}}")
    per_query = {name: values for name in metrics if (values := load_per_query(path, name)) is not None}
    return RunResult(path.name or str(path), path, metrics, per_query)


def seed_dirs(path: Path) -> list[Path]:
    """The `seed-K/` subdirs of a run dir that hold a metrics.json, by K (`scripts/results.py --seeds`)."""
    found = [(int(d.name[5:]), d) for d in path.glob("seed-*")
             if d.name[5:].isdigit() and (d / "metrics.json").exists()]
    return [d for _, d in sorted(found)]


def load_method(spec: str, seeds: bool = False) -> RunResult:
    """One method: a run dir, or comma-separated run dirs of its seeds; with `seeds`, each dir's `seed-K/`
    subdirs join it. Several runs are averaged (`average_runs`) and named after the first."""
    paths = [Path(x) for x in spec.split(",") if x]
    if not paths:
        raise ValueError(f"{spec!r}: no run dir")
    if seeds:
        paths = [q for path in paths for q in (path, *seed_dirs(path))]
    runs = [load_run(q) for q in paths]
    if len(runs) == 1:
        return runs[0]
    name = runs[0].name + (f" ({len(runs)} runs)")
    return average_runs(runs, name)


def t_test_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided paired t-test p-value. Differences that are all equal have no variance: p is 1 when
    they are 0 and 0 otherwise (scipy would return nan)."""
    d = y - x
    if len(d) < 2 or np.ptp(d) <= 1e-12:
        return 1.0 if len(d) == 0 or abs(float(d.mean())) <= 1e-12 else 0.0
    from scipy.stats import ttest_rel

    return float(ttest_rel(y, x).pvalue)


def randomization_p(x: np.ndarray, y: np.ndarray, permutations: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomization (sign-flip) test of mean(y - x) = 0.

    With 2^n <= `permutations` every sign assignment is enumerated and p is the exact fraction with
    |mean| >= the observed |mean|; otherwise `permutations` random assignments are drawn (fixed `seed`)
    and p = (count + 1) / (permutations + 1), which counts the observed assignment and is never 0.
    """
    d = np.asarray(y, dtype=np.float64) - np.asarray(x, dtype=np.float64)
    n = len(d)
    if n == 0:
        return 1.0
    observed = abs(d.mean()) - 1e-12  # ties (e.g. all differences 0) count as at least as extreme
    if n < 63 and 2**n <= permutations:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        means = ((1 - 2 * bits) * d).mean(axis=1)
        return float(np.mean(np.abs(means) >= observed))
    rng = np.random.default_rng(seed)
    count, chunk = 0, max(1, min(permutations, 2**22 // n))  # bounded memory for many queries
    for start in range(0, permutations, chunk):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(chunk, permutations - start), n))
        count += int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed))
    return (count + 1) / (permutations + 1)


def paired(base: dict[str, float], run: dict[str, float]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Values over the union of queries, a query missing from one side counted as 0 there; with the
    numbers missing from the baseline and from the run."""
    qids = list(dict.fromkeys([*base, *run]))
    x = np.array([base.get(q, 0.0) for q in qids])
    y = np.array([run.get(q, 0.0) for q in qids])
    return x, y, sum(q not in base for q in qids), sum(q not in run for q in qids)


def compare(runs: Sequence[RunResult], measure: str = "nDCG@10", tests: Sequence[str] = TESTS,
            permutations: int = 10_000, seed: int = 0) -> list[Comparison]:
    """Every later run against `runs[0]` on each eval set they share, by per-query `measure`."""
    base, out = runs[0], []
    for run in runs[1:]:
        for name in base.metrics:
            if name not in run.metrics:
                continue
            comparison = Comparison(name, run.name)
            sides = [(r, r.per_query.get(name, {}).get(measure)) for r in (base, run)]
            lacking = [r.name for r, values in sides if values is None]
            if lacking:
                comparison.note = (f"no per-query {measure} in {', '.join(lacking)} (no perquery/{name}.tsv: "
                                   "a run made before per-query values were saved)")
                out.append(comparison)
                continue
            x, y, comparison.missing_base, comparison.missing_run = paired(sides[0][1], sides[1][1])
            comparison.queries, comparison.delta = len(x), float((y - x).mean()) if len(x) else 0.0
            comparison.p = {}
            if "t" in tests:
                comparison.p["t"] = t_test_p(x, y)
            if "randomization" in tests:
                comparison.p["randomization"] = randomization_p(x, y, permutations, seed)
            if SEED_TEST in tests:
                xs, ys = base.values(name, measure), run.values(name, measure)
                if min(len(xs), len(ys)) >= 2:
                    comparison.p[SEED_TEST] = welch_p(xs, ys)
                else:
                    comparison.note = (f"no test over seeds: {len(xs)} run(s) of {base.name}, {len(ys)} of "
                                       f"{run.name} (it needs 2 or more on each side)")
            out.append(comparison)
    return out


def significance_marks(c: Comparison | None, alpha: float = 0.05) -> str:
    """The marks († t-test, ‡ randomization) of the tests in `c` with p < `alpha`; '' when none or untested."""
    if c is None or not c.p:
        return ""
    return "".join(MARKS[t] for t, p in c.p.items() if p < alpha)


def format_tables(runs: Sequence[RunResult], comparisons: Sequence[Comparison], measure: str,
                  alpha: float = 0.05, tests: Sequence[str] = TESTS) -> str:
    """Markdown: the final metrics (rows = runs, columns = set x measure, '-' where a run lacks the
    set), then the significance of `measure` against the first run, then notes."""
    sets = list(dict.fromkeys(s for r in runs for s in r.metrics))
    measures = {s: list(dict.fromkeys(m for r in runs for m in r.metrics.get(s, {}))) for s in sets}
    columns = [(s, m) for s in sets for m in measures[s]]
    by_key = {(c.run, c.eval_set): c for c in comparisons}
    lines = ["| run | " + " | ".join(f"{s} {m}" for s, m in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for i, run in enumerate(runs):
        cells = []
        for s, m in columns:
            value = run.metrics.get(s, {}).get(m)
            mark = significance_marks(by_key.get((run.name, s)), alpha) if i and m == measure else ""
            sd = run.sd(s, m) if value is not None else None
            cells.append("-" if value is None else f"{value:.4f}" + (f" ± {sd:.4f}" if sd is not None else "") + mark)
        lines.append(f"| {run.name} | " + " | ".join(cells) + " |")
    several = [r for r in runs if r.n_runs > 1]
    if several:
        lines += ["", "A method of several runs (seeds) shows their mean ± sample sd; its per-query values are "
                  "averaged over its runs before the paired tests."]

    lines += ["", f"Two-sided tests of per-query {measure} against {runs[0].name} (paired by query"
              + (f"; {TITLES[SEED_TEST]}: Welch's t-test over the runs' figures" if SEED_TEST in tests else "")
              + "):", "",
              "| set | run | Δ mean | " + " | ".join(f"p ({TITLES[t]})" for t in tests)
              + " | queries |", "|---" * (4 + len(tests)) + "|"]
    missing = []
    for c in comparisons:
        if c.p is None:
            lines.append(f"| {c.eval_set} | {c.run} | - | " + " | ".join("-" for _ in tests) + f" | {c.note} |")
            continue
        ps = [f"{c.p[t]:.4g}{MARKS[t] if c.p[t] < alpha else ''}" if t in c.p else "-" for t in tests]
        lines.append(f"| {c.eval_set} | {c.run} | {c.delta:+.4f} | " + " | ".join(ps) + f" | {c.queries} |"
                     + (f" {c.note}" if c.note else ""))
        if c.missing_base or c.missing_run:
            missing.append(f"{c.eval_set}: {c.missing_base} queries missing from {runs[0].name}, "
                           f"{c.missing_run} missing from {c.run}")
    lines += ["", f"Marks: {', '.join(f'{MARKS[t]} {TITLES[t]}' for t in tests)}"
              f" p < {alpha} against {runs[0].name}. A query missing from one run counts as 0 for that run."]
    lines += [f"Missing queries (counted as 0): {m}" for m in missing]
    return "\n".join(lines)


def plot_bars(runs: Sequence[RunResult], comparisons: Sequence[Comparison], measure: str, path: str | Path,
              alpha: float = 0.05) -> Path:
    """Grouped bars: one group per eval set that any run measured, one bar per run, value on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [s for s in dict.fromkeys(s for r in runs for s in r.metrics)
            if any(measure in r.metrics.get(s, {}) for r in runs)]
    if not sets:
        raise ValueError(f"no run has {measure!r} in metrics.json")
    by_key = {(c.run, c.eval_set): c for c in comparisons}
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + len(sets) * len(runs) * 0.9), 4.5))
    for i, run in enumerate(runs):
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(sets))]
        values = [run.metrics.get(s, {}).get(measure, math.nan) for s in sets]
        bars = ax.bar(xs, values, width, label=run.name, color=f"C{i}")
        for bar, s, v in zip(bars, sets, values):
            if not math.isnan(v):
                mark = significance_marks(by_key.get((run.name, s)), alpha) if i else ""
                ax.annotate(f"{v:.3f}{mark}", (bar.get_x() + bar.get_width() / 2, v), ha="center",
                            va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(sets)), sets)
    ax.set_xlabel("eval set")
    ax.set_ylabel(measure)
    ax.set_ylim(0, min(1.0, max(r.metrics.get(s, {}).get(measure, 0.0) for r in runs for s in sets) * 1.15 + 0.02))
    ax.set_title(f"{measure} (final); {MARKS['t']} t-test, {MARKS['randomization']} randomization: "
                 f"p < {alpha} vs {runs[0].name}", fontsize=10)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m dr.compare", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", help="run dirs, the first the baseline; comma-separated run dirs "
                        "are the seeds of one method")
    parser.add_argument("--seeds", action="store_true", help="each run dir's seed-K/ subdirs are more seeds of it")
    parser.add_argument("--measure", default="nDCG@10", help="per-query measure to test (default nDCG@10)")
    parser.add_argument("--out", type=Path, default=Path("compare.png"), help="bar chart PNG (default compare.png)")
    parser.add_argument("--test", choices=[*TESTS, "both"], default="both", help="significance test(s)")
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args(argv)
    try:
        runs = [load_method(p, args.seeds) for p in args.run_dirs]
    except (ValueError, OSError) as e:
        parser.error(str(e))
    if len({r.name for r in runs}) < len(runs):  # same basename in different places
        for r in runs:
            r.name = str(r.path) + (f" ({r.n_runs} runs)" if r.n_runs > 1 else "")
    tests = TESTS if args.test == "both" else (args.test,)
    if any(r.n_runs > 1 for r in runs):
        tests = (*tests, SEED_TEST)
    comparisons = compare(runs, args.measure, tests, args.permutations, args.seed)
    table = format_tables(runs, comparisons, args.measure, args.alpha, tests)
    print(table)
    try:
        print(f"\nbar chart: {plot_bars(runs, comparisons, args.measure, args.out, args.alpha)}")
    except ImportError:
        print("\nmatplotlib is not installed: no bar chart", file=sys.stderr)
    except ValueError as e:
        print(f"\nno bar chart: {e}", file=sys.stderr)
    return table


if __name__ == "__main__":
    main()
