"""A run directory's JSON-lines logs, cut back to a checkpoint on resume so that each step is logged once.

`train_log.jsonl`, `eval_log.jsonl`, `metrics.jsonl` and `refresh.jsonl` grow by appending. A process
killed after its last checkpoint has logged steps that the resumed run replays, and a finished run that is
resumed evaluates dev and test again at the end. So every checkpoint records how many lines each log had
when it was written (`log_lines.json`, listed in its manifest), and resuming from a checkpoint of this run
directory cuts each log back to that many lines, atomically (the kept lines go to a temporary file that
then replaces the log), before training continues.

What a checkpoint keeps follows from the order of events: at a step the loop calls the log, evaluation and
checkpoint callbacks in that order, so the step's train line and its dev evaluation precede the save, and
everything after it (the next step's miner refresh, the final dev and test evaluations, which come after
the last checkpoint) is written again by the resumed run.

- `resume=true` in a run directory with no complete checkpoint starts again from step 0: the logs are
  emptied.
- A checkpoint written before these counts existed leaves the logs as they are (with a warning; their
  replayed steps repeat), except for an unfinished last line, which is always dropped.
- A checkpoint of another run directory (`resume=PATH`) leaves this one's logs alone.
- TensorBoard event files are not cut: they may hold a replayed step twice, and TensorBoard shows the
  latest value per step.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from dr.io import atomic_write_bytes
from dr.report import METRICS_FILE

logger = logging.getLogger(__name__)
LOG_FILES = ("train_log.jsonl", "eval_log.jsonl", METRICS_FILE, "refresh.jsonl")
LOG_LINES = "log_lines.json"  # in each checkpoint: {log file name: complete lines when it was written}


def count_lines(run_dir: Path) -> dict[str, int]:
    """Complete (newline-terminated) lines of each log in `run_dir`; 0 for a log not written yet."""
    counts = {}
    for name in LOG_FILES:
        try:
            with open(run_dir / name, "rb") as f:
                counts[name] = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except FileNotFoundError:
            counts[name] = 0
    return counts


def keep_lines(path: Path, lines: int | None) -> None:
    """Cut `path` to its first `lines` complete lines (None: all complete lines, dropping an unfinished
    last one), atomically. A log with fewer lines than that is left as it is, with a warning."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if lines:
            logger.warning("%s is missing; the checkpoint counted %d lines in it", path, lines)
        return
    end = data.rfind(b"\n") + 1 if lines is None else _end_of_line(data, lines)
    if end is None:  # cut by hand since the checkpoint: what is there stays
        logger.warning("%s has %d lines, fewer than the %d its checkpoint counted; left as it is", path,
                       data.count(b"\n"), lines)
        return
    if end == len(data):
        return
    atomic_write_bytes(path, data[:end])
    logger.info("%s: dropped %d line(s) that the resumed run writes again", path,
                data[end:].count(b"\n") + (not data.endswith(b"\n")))


def _end_of_line(data: bytes, lines: int) -> int | None:
    """The offset just past the `lines`-th newline of `data`; None when it has fewer."""
    end = 0
    for _ in range(lines):
        end = data.find(b"\n", end) + 1
        if end == 0:
            return None
    return end


def rewind_logs(run_dir: Path, checkpoint: Path | None) -> None:
    """Cut `run_dir`'s logs back to `checkpoint` (the one this run resumes from; None: there is none,
    so the run starts again from step 0). Call on the first process only, before anything is logged."""
    if checkpoint is not None and checkpoint.resolve().parent != (run_dir / "checkpoints").resolve():
        return  # another run's checkpoint: this directory's logs are not its history
    if checkpoint is None:
        counts = dict.fromkeys(LOG_FILES, 0)
    else:
        try:
            counts = json.loads((checkpoint / LOG_LINES).read_text())
        except FileNotFoundError:
            logger.warning("%s has no %s (written by an older dr): the logs of %s keep the lines of steps "
                           "after it, which are logged again", checkpoint, LOG_LINES, run_dir)
            counts = {}
    for name in LOG_FILES:
        keep_lines(run_dir / name, counts.get(name))
