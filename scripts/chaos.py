"""Kill-and-resume check: SIGKILL tiny training runs at random moments, resume each with `resume=true` in
the same run directory, and compare the result with an uninterrupted run.

    python scripts/chaos.py                    # 30 kills, seed 0 (about 10 minutes on 2 CPU cores)
    python scripts/chaos.py --kills 4 --seed 1 --workdir /tmp/chaos

The runs are `python -m dr.train` on the tiny BERT and tiny data of tests/conftest.py (+experiment=
bm25_negatives, 12 steps, a checkpoint every 2 steps, 2 kept, a dev evaluation every 4 steps, the test
sets at the end). Kills come in chains: a chain is one run directory killed `--kills-per-chain` times and
then run to the end. Each kill is aimed at one of:

  random  a random moment of the process's life (start-up, training, evaluation, export);
  step    right after the k-th training step this process logged (between checkpoints: replayed steps);
  write   a random moment within 5 ms of the k-th `checkpoints/.tmp-step-*` appearing (a save);
  prune   the moment the rename of a save that prunes lands (`step-N` appears; pruning follows at once).

Where a kill landed is read from what it left behind: `.tmp-step-*` or `.rng-step-*` (a checkpoint
write), `.trash-*` or one `step-N` too many (pruning). After every kill each `step-N` directory must be
complete. At the end each chain must match the uninterrupted run: the loss and other logged values of
every step, each logged once (a resume cuts the logs back to its checkpoint; a replayed step logged twice
is counted as a duplicate and is a mismatch), the dev/test metrics, the checkpoints (byte-identical files,
except timings inside trainer_state.json and the order of safetensors' header metadata) and the export and
best-model bytes, with no leftovers beside them. Exits 1 on any mismatch.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = {"random": 0.25, "step": 0.15, "write": 0.35, "prune": 0.25}
POLL_S = 0.001


@dataclass
class Options:
    kills: int = 30
    seed: int = 0
    kills_per_chain: int = 8
    max_steps: int = 12
    save_every: int = 2
    keep: int = 2
    experiment: str = "bm25_negatives"
    timeout_s: float = 300.0


@dataclass
class Kill:
    chain: int
    aimed: str
    landed: str
    after_s: float


@dataclass
class Report:
    kills: list[Kill] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    duplicates: Counter = field(default_factory=Counter)
    chains: int = 0


# ------------------------------------------------------------------------------------------------ fixtures


def build_fixtures(work: Path) -> tuple[Path, Path]:
    """The tiny BERT and the tiny data folder (with its 36-query train split) of tests/conftest.py."""
    spec = importlib.util.spec_from_file_location("dr_test_fixtures", REPO / "tests" / "conftest.py")
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    model = fixtures.build_tiny_bert(work / "tiny-bert")
    data = fixtures.write_tiny_data(work / "data")
    shutil.rmtree(data / "scifact")
    fixtures.write_train_beir(data / "scifact")
    return model, data


def train_command(opts: Options, model: Path, run_dir: Path, resume: bool) -> list[str]:
    experiment = [] if opts.experiment in ("", "none", "inbatch") else [f"+experiment={opts.experiment}"]
    return [sys.executable, "-m", "dr.train", *experiment,
            f"model.name_or_path={model}", "model.show_progress=false", "model.passage_max_length=32",
            "model.pooling=mean", "trainer.lr=1e-3", "trainer.batch_size=4", "trainer.dev_queries=4",
            "trainer.tensorboard=false", f"trainer.max_steps={opts.max_steps}",
            f"trainer.save_every={opts.save_every}", f"trainer.keep_checkpoints={opts.keep}", "trainer.eval_every=4",
            f"hydra.run.dir={run_dir}", *(["resume=true"] if resume else [])]


def launch(cmd: list[str], data: Path, cache: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DR_DATA_DIR": str(data), "DR_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    with open(log, "ab") as out:  # the child keeps its own handle
        # its own process group, so that the kill reaches the run and nothing else
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


# ------------------------------------------------------------------------------------------------- killing


Entry = tuple[str, int, int]


def _entries(directory: Path) -> set[Entry]:
    """(name, inode, mtime) of each entry: one made again under the same name (even on a reused inode), or
    written to, is a new one."""
    out = set()
    try:
        for e in os.scandir(directory):
            try:
                out.add((e.name, e.inode(), e.stat(follow_symlinks=False).st_mtime_ns))
            except FileNotFoundError:  # deleted since it was listed
                pass
    except FileNotFoundError:
        pass
    return out


def _logged_steps(run_dir: Path) -> int:
    try:
        return (run_dir / "train_log.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@dataclass
class Aim:
    """The moment to kill at: `kind` (see the module docstring), the `k`-th such event of this process, the
    deadline of a random kill, and a delay after the event."""

    kind: str
    k: int = 1
    deadline: float = 0.0
    delay_s: float = 0.0


def plan(rng: random.Random, opts: Options, run_dir: Path, lifetime_s: float) -> Aim:
    """An aim this process can still reach, given the checkpoint it will resume from."""
    from dr.trainer.checkpoint import scan_checkpoints

    complete, _ = scan_checkpoints(run_dir / "checkpoints")
    latest = int(complete[-1].name.split("-")[1]) if complete else 0
    steps_left = opts.max_steps - latest
    saves_left = opts.max_steps // opts.save_every - latest // opts.save_every
    # the j-th save of this process prunes when the checkpoints then number more than `keep`
    first_pruning_save = max(1, opts.keep - len(complete) + 1)
    kinds = {k: w for k, w in KINDS.items() if k == "random" or (k == "step" and steps_left > 0)
             or (k == "write" and saves_left > 0) or (k == "prune" and first_pruning_save <= saves_left)}
    kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
    if kind == "random":  # a resumed run has fewer steps left to live than the uninterrupted one
        return Aim(kind, deadline=rng.uniform(0.0, 0.6 * lifetime_s))
    if kind == "step":
        return Aim(kind, k=rng.randint(1, min(3, steps_left)))
    if kind == "write":  # a tiny checkpoint takes a few milliseconds to write
        return Aim(kind, k=rng.randint(1, min(2, saves_left)), delay_s=rng.uniform(0.0, 0.005))
    return Aim(kind, k=first_pruning_save)


class Watch:
    """Polls the run directory for the moment an `Aim` names."""

    def __init__(self, aim: Aim, run_dir: Path, keep: int) -> None:
        self.aim, self.run_dir, self.keep = aim, run_dir, keep
        self.start = time.perf_counter()
        self.at_start = _entries(run_dir / "checkpoints")
        self.steps_at_start = _logged_steps(run_dir)
        self.saves_begun: set[str] = set()
        self.saves_done: set[str] = set()
        self.spin = False  # poll without sleeping: pruning lasts about a millisecond

    def due(self) -> bool:
        aim = self.aim
        if aim.kind == "random":
            return time.perf_counter() - self.start >= aim.deadline
        if aim.kind == "step":
            return _logged_steps(self.run_dir) >= self.steps_at_start + aim.k
        new = {name for name, _, _ in _entries(self.run_dir / "checkpoints") - self.at_start}
        if aim.kind == "write":
            self.saves_begun |= {n for n in new if n.startswith(".tmp-step-")}
            return len(self.saves_begun) >= aim.k
        # prune: the k-th save of this process prunes right after its step-N appears (rename, then prune).
        # While that save is being written, poll without sleeping so as to kill within microseconds of it.
        self.saves_done |= {n for n in new if n.startswith("step-")}
        self.spin = len(self.saves_done) == aim.k - 1 and any(n.startswith(".tmp-step-") for n in new)
        return len(self.saves_done) >= aim.k or any(n.startswith(".trash-") for n in new)


def landed(run_dir: Path, at_start: set[Entry], keep: int) -> str:
    """Where a kill landed, from what this process left in checkpoints/: entries made, or written, after it
    started (an earlier kill's leftovers stay until the next save clears them, so they do not count).

    "pruning": a `.trash-*` (killed while deleting), or a new `step-N` beside more than `keep` of them
    (killed after the save's rename, before the old checkpoint was moved aside).
    """
    now = _entries(run_dir / "checkpoints")
    fresh = {name for name, _, _ in now - at_start}
    steps = sum(name.startswith("step-") for name, _, _ in now)
    if any(n.startswith(".trash-") for n in fresh) or (any(n.startswith("step-") for n in fresh) and steps > keep):
        return "pruning"
    if any(n.startswith((".tmp-step-", ".rng-step-")) for n in fresh):
        return "checkpoint write"
    return "elsewhere"


def incomplete_checkpoints(run_dir: Path) -> list[str]:
    from dr.trainer.checkpoint import scan_checkpoints

    _, incomplete = scan_checkpoints(run_dir / "checkpoints")
    return [f"{path.name}: {why}" for path, why in incomplete]


def run_until_killed(opts: Options, aim: Aim, cmd: list[str], data: Path, cache: Path, run_dir: Path,
                     log: Path) -> tuple[float, str] | int:
    """Start `cmd` and kill it at `aim`: `(seconds after start, where it landed)`, or the exit code if it
    ended first."""
    watch = Watch(aim, run_dir, opts.keep)
    proc = launch(cmd, data, cache, log)
    with _killed_on_exit(proc):
        return _kill_when_due(opts, aim, watch, proc, cmd, run_dir, log)


@contextlib.contextmanager
def _killed_on_exit(proc: subprocess.Popen):
    """Interrupting this script (Ctrl-C, an error) must not leave a run going in its own session."""
    try:
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _kill_when_due(opts: Options, aim: Aim, watch: Watch, proc: subprocess.Popen, cmd: list[str], run_dir: Path,
                   log: Path) -> tuple[float, str] | int:
    while proc.poll() is None:
        if watch.due():
            time.sleep(aim.delay_s)
            os.killpg(proc.pid, signal.SIGKILL)  # its group: still there, even if it has just exited
            if proc.wait() != -signal.SIGKILL:  # it ended on its own first
                return proc.returncode
            return time.perf_counter() - watch.start, landed(run_dir, watch.at_start, opts.keep)
        if time.perf_counter() - watch.start > opts.timeout_s:
            raise TimeoutError(f"{' '.join(cmd)} ran past {opts.timeout_s}s (log: {log})")
        if not watch.spin:
            time.sleep(POLL_S)
    return proc.returncode


def run_to_end(opts: Options, cmd: list[str], data: Path, cache: Path, log: Path) -> int:
    proc = launch(cmd, data, cache, log)
    with _killed_on_exit(proc):
        try:
            return proc.wait(timeout=opts.timeout_s)
        except subprocess.TimeoutExpired:
            return -1


def chaos_chain(opts: Options, rng: random.Random, chain: int, kills: int, model: Path, data: Path, work: Path,
                lifetime_s: float, report: Report) -> Path:
    """One run directory killed `kills` times (fewer if it finishes first), then run to the end."""
    run_dir = work / f"chain-{chain}" / "run"
    cache = work / f"chain-{chain}" / "cache"
    log = work / f"chain-{chain}" / "output.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    done = 0
    while done < kills:
        aim = plan(rng, opts, run_dir, lifetime_s)
        outcome = run_until_killed(opts, aim, train_command(opts, model, run_dir, resume=done > 0), data, cache,
                                   run_dir, log)
        if isinstance(outcome, int):  # it ended before the moment came
            if outcome != 0:
                report.problems.append(f"chain {chain}: dr.train exited with {outcome} (see {log})")
            return run_dir
        after, where = outcome
        done += 1
        report.kills.append(Kill(chain, aim.kind, where, after))
        print(f"  kill {len(report.kills):3d}: chain {chain}, aimed at {aim.kind:6s} -> {where} "
              f"({after:.1f}s after start)", flush=True)
        for problem in incomplete_checkpoints(run_dir):
            report.problems.append(f"chain {chain}, after kill {len(report.kills)}: incomplete {problem}")
    rc = run_to_end(opts, train_command(opts, model, run_dir, resume=True), data, cache, log)
    if rc != 0:
        report.problems.append(f"chain {chain}: the final resume exited with {rc} (see {log})")
    return run_dir


# ---------------------------------------------------------------------------------------------- comparison


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """Records and the number of unreadable lines."""
    if not path.exists():
        return [], 0
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    return records, bad


def last_by(records: list[dict], key: tuple[str, ...]) -> tuple[dict, int]:
    """`{key: last record}` and how many records were repeats of an earlier key."""
    out: dict = {}
    for r in records:
        out[tuple(r.get(k) for k in key)] = r
    return out, len(records) - len(out)


def _without_timings(value):
    """JSON with wall-clock fields (`*_s`, queries_per_s) removed: they differ between any two runs."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not k.endswith("_s")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


LOGS = {"train_log.jsonl": ("step",), "eval_log.jsonl": ("step", "tag"), "metrics.jsonl": ("step", "set", "tag"),
        "refresh.jsonl": ("step",)}


def compare_logs(ref: Path, run: Path, report: Report, label: str) -> None:
    for name, key in LOGS.items():
        expected, _ = last_by(read_jsonl(ref / name)[0], key)
        records, bad = read_jsonl(run / name)
        got, repeats = last_by(records, key)
        report.duplicates[name] += repeats
        if repeats:
            report.problems.append(f"{label}: {name} logs {repeats} step(s) twice")
        if bad:
            report.problems.append(f"{label}: {name} has {bad} unreadable line(s)")
        if set(got) != set(expected):
            report.problems.append(f"{label}: {name} keys {sorted(map(str, set(got) ^ set(expected)))} differ")
        for k in sorted(set(got) & set(expected), key=str):
            if _without_timings(got[k]) != _without_timings(expected[k]):
                report.problems.append(f"{label}: {name} {dict(zip(key, k))}: {_without_timings(got[k])} != "
                                       f"{_without_timings(expected[k])}")
    for name in ("metrics.json",):
        a, b = (p / name for p in (ref, run))
        if not b.exists() or json.loads(a.read_text()) != json.loads(b.read_text()):
            report.problems.append(f"{label}: {name} differs")


def _tree(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()} if root.is_dir() else {}


def _same_file(a: Path, b: Path) -> bool:
    if a.name == "trainer_state.json":  # holds evaluation timings
        return _without_timings(json.loads(a.read_text())) == _without_timings(json.loads(b.read_text()))
    if a.name == "manifest.json":  # its size of trainer_state.json varies with those timings' digits
        return _manifest_files(a) == _manifest_files(b)
    if a.suffix == ".safetensors":
        return _safetensors_parts(a) == _safetensors_parts(b)
    return a.read_bytes() == b.read_bytes()


def _manifest_files(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text())["files"].items() if k != "trainer_state.json"}


def _safetensors_parts(path: Path) -> tuple[dict, bytes]:
    """(header, tensor bytes). The header is compared parsed: safetensors writes its `__metadata__` map (here
    the names of tied tensors) in an order that changes from process to process, so two checkpoints of the
    same weights differ in those bytes only."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + size]), raw[8 + size:]


def compare_files(ref: Path, run: Path, report: Report, label: str) -> None:
    for sub in ("checkpoints", "export"):
        expected, got = _tree(ref / sub), _tree(run / sub)
        if set(expected) != set(got):
            report.problems.append(f"{label}: {sub}/ holds {sorted(set(got) ^ set(expected))} unlike the "
                                   f"uninterrupted run")
        for rel in sorted(set(expected) & set(got)):
            if not _same_file(expected[rel], got[rel]):
                report.problems.append(f"{label}: {sub}/{rel} differs")
    best = [p / "best.safetensors" for p in (ref, run)]
    if best[0].exists() != best[1].exists() or best[0].exists() and not _same_file(*best):
        report.problems.append(f"{label}: best.safetensors differs")


# ------------------------------------------------------------------------------------------------------ main


def chaos(opts: Options, work: Path) -> Report:
    rng = random.Random(opts.seed)
    print(f"building the tiny model and data in {work}", flush=True)
    model, data = build_fixtures(work)
    ref_dir = work / "uninterrupted" / "run"
    ref_dir.parent.mkdir(parents=True)
    # the uninterrupted run goes alongside the chains: the comparison needs it only at the end
    ref_start = time.time()
    reference = launch(train_command(opts, model, ref_dir, resume=False), data, work / "uninterrupted" / "cache",
                       work / "uninterrupted" / "output.log")
    with _killed_on_exit(reference):
        return _chains(opts, rng, model, data, work, reference, ref_dir, ref_start)


def _chains(opts: Options, rng: random.Random, model: Path, data: Path, work: Path, reference: subprocess.Popen,
            ref_dir: Path, ref_start: float) -> Report:
    lifetime_s, measured = 25.0, False  # a whole tiny run on 2 busy cores, until the uninterrupted one says
    report = Report()
    chains: list[Path] = []
    idle = 0  # chains in a row that ended before any kill
    while len(report.kills) < opts.kills:
        if not measured and reference.poll() is not None and (ref_dir / "timings.json").exists():
            # when it wrote its last file, not when this loop noticed
            lifetime_s, measured = (ref_dir / "timings.json").stat().st_mtime - ref_start, True
        want = min(opts.kills_per_chain, opts.kills - len(report.kills))
        before = len(report.kills)
        chains.append(chaos_chain(opts, rng, len(chains), want, model, data, work, lifetime_s, report))
        idle = idle + 1 if len(report.kills) == before else 0
        if idle == 5:
            report.problems.append("5 chains in a row finished before any kill landed")
            break
    report.chains = len(chains)
    if reference.wait(timeout=opts.timeout_s) != 0:
        report.problems.append(f"the uninterrupted run failed (see {work / 'uninterrupted' / 'output.log'})")
        return report
    for i, run_dir in enumerate(chains):
        compare_logs(ref_dir, run_dir, report, f"chain {i}")
        compare_files(ref_dir, run_dir, report, f"chain {i}")
    return report


def summarize(report: Report, opts: Options, wall_s: float) -> str:
    landed_at = Counter(k.landed for k in report.kills)
    aimed = Counter(k.aimed for k in report.kills)
    dups = ", ".join(f"{name} {n}" for name, n in sorted(report.duplicates.items()) if n) or "none"
    lines = [
        f"chaos: {len(report.kills)} SIGKILLs (seed {opts.seed}) over {report.chains} chain(s) of "
        f"{opts.max_steps} steps, save every {opts.save_every}, keep {opts.keep}",
        "  aimed at: " + ", ".join(f"{k} {aimed[k]}" for k in KINDS),
        f"  landed during checkpoint write: {landed_at['checkpoint write']}, during pruning: "
        f"{landed_at['pruning']}, elsewhere: {landed_at['elsewhere']}",
        f"  duplicate log lines (replayed steps logged twice): {dups}",
        f"  matched the uninterrupted run: {'yes' if not report.problems else 'NO'}",
        *(f"    {p}" for p in report.problems[:40]),
        f"  wall time: {wall_s:.0f}s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=Options.kills, help="SIGKILLs in all (default 30)")
    parser.add_argument("--seed", type=int, default=Options.seed)
    parser.add_argument("--kills-per-chain", type=int, default=Options.kills_per_chain)
    parser.add_argument("--max-steps", type=int, default=Options.max_steps)
    parser.add_argument("--experiment", default=Options.experiment, help="+experiment=NAME, or none (in-batch)")
    parser.add_argument("--workdir", type=Path, default=None, help="a new directory to work in and keep "
                        "(default: a temporary one, removed at the end)")
    args = parser.parse_args(argv)
    opts = Options(kills=args.kills, seed=args.seed, kills_per_chain=args.kills_per_chain,
                   max_steps=args.max_steps, experiment=args.experiment)
    start = time.perf_counter()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=False)
        report = chaos(opts, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="dr-chaos-") as tmp:
            report = chaos(opts, Path(tmp))
    print(summarize(report, opts, time.perf_counter() - start), flush=True)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
