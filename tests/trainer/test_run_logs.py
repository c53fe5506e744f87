"""Logs cut back to the checkpoint a run resumes from: each step logged once after any number of resumes."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from dr.trainer.checkpoint import TrainState, save_checkpoint, save_rng_state
from dr.trainer.run_logs import LOG_FILES, LOG_LINES, count_lines, rewind_logs


def _log(run: Path, name: str, *steps: int, unfinished: bool = False) -> None:
    with open(run / name, "a", encoding="utf-8") as f:
        f.writelines(json.dumps({"step": s}) + "\n" for s in steps)
        if unfinished:  # a kill in the middle of a write
            f.write('{"step": ')


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def _checkpoint(run: Path, step: int, with_counts: bool = True) -> Path:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    save_rng_state(run / "checkpoints", step, 0)
    extras = {LOG_LINES: count_lines(run)} if with_counts else None
    return save_checkpoint(run / "checkpoints", TrainState(step=step), model, optimizer, scheduler, None, 5, extras)


def test_resume_cuts_every_log_back_to_the_checkpoint(tmp_path):
    _log(tmp_path, "train_log.jsonl", 1, 2)
    _log(tmp_path, "eval_log.jsonl", 2)
    _log(tmp_path, "refresh.jsonl", 0)
    checkpoint = _checkpoint(tmp_path, 2)
    assert json.loads((checkpoint / LOG_LINES).read_text()) == {
        "train_log.jsonl": 2, "eval_log.jsonl": 1, "metrics.jsonl": 0, "refresh.jsonl": 1}
    assert LOG_LINES in json.loads((checkpoint / "manifest.json").read_text())["files"]
    # the killed process went on: step 3, a refresh, the final evaluations, then a kill mid-line
    _log(tmp_path, "refresh.jsonl", 2)
    _log(tmp_path, "train_log.jsonl", 3, unfinished=True)
    _log(tmp_path, "eval_log.jsonl", 3, 3)
    _log(tmp_path, "metrics.jsonl", 3)
    rewind_logs(tmp_path, checkpoint)
    assert _steps(tmp_path / "train_log.jsonl") == [1, 2]
    assert _steps(tmp_path / "eval_log.jsonl") == [2]
    assert _steps(tmp_path / "refresh.jsonl") == [0]
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    assert not list(tmp_path.glob(".*.tmp"))
    rewind_logs(tmp_path, checkpoint)  # a second resume from the same checkpoint changes nothing
    assert _steps(tmp_path / "train_log.jsonl") == [1, 2]


def test_resume_without_a_checkpoint_starts_the_logs_afresh(tmp_path):
    _log(tmp_path, "train_log.jsonl", 1)  # killed before the first checkpoint
    rewind_logs(tmp_path, None)
    assert (tmp_path / "train_log.jsonl").read_text() == ""
    assert not (tmp_path / "eval_log.jsonl").exists()


def test_another_runs_checkpoint_leaves_this_runs_logs_alone(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    _log(other, "train_log.jsonl", 1, 2)
    checkpoint = _checkpoint(other, 2)
    run = tmp_path / "run"
    run.mkdir()
    _log(run, "train_log.jsonl", 1, 2, 3)
    rewind_logs(run, checkpoint)
    assert _steps(run / "train_log.jsonl") == [1, 2, 3]


def test_checkpoint_without_counts_keeps_the_logs_but_drops_an_unfinished_line(tmp_path, caplog):
    _log(tmp_path, "train_log.jsonl", 1, 2)
    checkpoint = _checkpoint(tmp_path, 2, with_counts=False)  # written before log_lines.json existed
    _log(tmp_path, "train_log.jsonl", 3, unfinished=True)
    with caplog.at_level(logging.WARNING, logger="dr"):
        rewind_logs(tmp_path, checkpoint)
    assert _steps(tmp_path / "train_log.jsonl") == [1, 2, 3]
    assert any(LOG_LINES in r.getMessage() for r in caplog.records)


def test_a_log_shorter_than_counted_is_left_as_it_is(tmp_path, caplog):
    _log(tmp_path, "train_log.jsonl", 1, 2)
    checkpoint = _checkpoint(tmp_path, 2)
    (tmp_path / "train_log.jsonl").write_text(json.dumps({"step": 2}) + "\n")  # edited by hand
    with caplog.at_level(logging.WARNING, logger="dr"):
        rewind_logs(tmp_path, checkpoint)
    assert _steps(tmp_path / "train_log.jsonl") == [2]
    assert any("fewer than the 2" in r.getMessage() for r in caplog.records)
    assert set(count_lines(tmp_path)) == set(LOG_FILES)
