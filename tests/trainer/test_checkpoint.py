"""Checkpoint completeness: a manifest written last, pruning by rename, incomplete checkpoints skipped."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from dr.trainer import checkpoint as ckpt
from dr.trainer.checkpoint import (TrainState, list_checkpoints, load_checkpoint, resolve_resume, save_checkpoint,
                                   save_rng_state)


_REAL_DISCARD = ckpt._discard


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs."""


def _parts():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return model, optimizer, scheduler


def _save(root: Path, step: int, keep: int = 2, negatives: dict | None = None) -> Path:
    model, optimizer, scheduler = _parts()
    save_rng_state(root, step, 0)
    return save_checkpoint(root, TrainState(step=step), model, optimizer, scheduler, negatives, keep)


def _saved(run: Path, steps: list[int], keep: int = 5) -> Path:
    root = run / "checkpoints"
    for step in steps:
        _save(root, step, keep)
    return root


def test_manifest_lists_every_file_and_its_size(tmp_path):
    path = _save(tmp_path / "checkpoints", 2, negatives={"q1": ["d1", "d2"]})
    manifest = json.loads((path / "manifest.json").read_text())
    files = {p.name: p.stat().st_size for p in path.iterdir() if p.name != "manifest.json"}
    assert manifest["files"] == files
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng-rank0.pt", "python_random.json",
            "trainer_state.json", "negatives.tsv"} == set(files)


def test_half_deleted_latest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog):
    root = _saved(tmp_path, [2, 4])
    (root / "step-4" / "scheduler.pt").unlink()  # what a kill during `rm -r` leaves
    with caplog.at_level(logging.WARNING, logger="dr"):
        assert resolve_resume(True, tmp_path) == root / "step-2"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(root / "step-4") in m and "scheduler.pt" in m for m in warned), warned
    assert list_checkpoints(root) == [root / "step-2"]
    state, _ = load_checkpoint(resolve_resume(True, tmp_path), *_parts())
    assert state.step == 2


def test_truncated_file_makes_a_checkpoint_incomplete(tmp_path):
    root = _saved(tmp_path, [2, 4])
    model_file = root / "step-4" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:10])
    assert list_checkpoints(root) == [root / "step-2"]


def test_pruning_renames_before_deleting(tmp_path, monkeypatch):
    root = _saved(tmp_path, [2, 4], keep=2)
    real_rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):
        # delete one file, then die: the directory is left half-deleted
        (Path(path) / "scheduler.pt").unlink()
        raise _Killed

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_midway)
    with pytest.raises(_Killed):
        _save(root, 6, keep=2)  # prunes step-2
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    for step_dir in root.glob("step-*"):  # no step-N directory is ever half-deleted
        assert (step_dir / "scheduler.pt").exists(), step_dir
    assert list_checkpoints(root) == [root / "step-4", root / "step-6"]
    assert [p.name for p in root.glob(".trash-*")] == [".trash-step-2"]
    _save(root, 8, keep=2)  # the next save clears what the killed prune left
    assert sorted(p.name for p in root.iterdir()) == ["step-6", "step-8"]


def test_resume_clears_what_a_prune_killed_in_the_last_save_left(tmp_path, monkeypatch):
    """No save follows the last one, so resuming (to evaluate and export) clears the trash."""
    root = _saved(tmp_path, [2, 4], keep=2)
    real_rmtree = shutil.rmtree

    def killed(path, *args, **kwargs):
        raise _Killed

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed)
    with pytest.raises(_Killed):
        _save(root, 6, keep=2)
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    assert (root / ".trash-step-2").is_dir()
    assert resolve_resume(True, tmp_path) == root / "step-6"
    assert sorted(p.name for p in root.iterdir()) == ["step-4", "step-6"]


def test_kill_while_writing_leaves_the_previous_checkpoint_latest(tmp_path, monkeypatch):
    root = _saved(tmp_path, [2])

    def killed(*args, **kwargs):
        raise _Killed

    monkeypatch.setattr(ckpt, "_write_manifest", killed)
    with pytest.raises(_Killed):
        _save(root, 4)
    assert resolve_resume(True, tmp_path) == root / "step-2"


def test_checkpoint_without_manifest_still_resumes_when_its_files_exist(tmp_path, caplog):
    """Written by code before the manifest: trusted when every file a checkpoint always has is there."""
    root = _saved(tmp_path, [2, 4])
    for step in (2, 4):
        (root / f"step-{step}" / "manifest.json").unlink()
    assert list_checkpoints(root) == [root / "step-2", root / "step-4"]
    (root / "step-4" / "optimizer.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="dr"):
        assert resolve_resume(True, tmp_path) == root / "step-2"
    assert any("step-4" in r.getMessage() and "optimizer.pt" in r.getMessage() for r in caplog.records)


def test_explicit_resume_of_an_incomplete_checkpoint_names_what_is_missing(tmp_path):
    root = _saved(tmp_path, [2])
    (root / "step-2" / "rng-rank0.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"step-2.*incomplete.*rng-rank0\.pt"):
        resolve_resume(str(root / "step-2"), tmp_path)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        resolve_resume(str(tmp_path), tmp_path)


def test_round_trip(tmp_path):
    root = tmp_path / "checkpoints"
    path = _save(root, 3, negatives={"q1": ["d1"]})
    model, optimizer, scheduler = _parts()
    state, negatives = load_checkpoint(path, model, optimizer, scheduler)
    assert state.step == 3 and negatives == {"q1": ["d1"]}


def test_resume_finishes_a_prune_killed_before_it_moved_anything(tmp_path, monkeypatch):
    """Killed after the last save's rename, before pruning began: resuming (nothing left to save) still
    ends with `keep` checkpoints, the number the killed save was pruning to."""
    root = _saved(tmp_path, [2, 4], keep=2)

    def killed(path):
        raise _Killed

    monkeypatch.setattr(ckpt, "_discard", killed)
    with pytest.raises(_Killed):
        _save(root, 6, keep=2)
    monkeypatch.setattr(ckpt, "_discard", _REAL_DISCARD)
    assert sorted(p.name for p in root.iterdir()) == ["step-2", "step-4", "step-6"]
    assert resolve_resume(True, tmp_path) == root / "step-6"
    assert sorted(p.name for p in root.iterdir()) == ["step-4", "step-6"]


def test_discarding_a_path_another_process_already_moved_is_not_an_error(tmp_path):
    """Every process of a multi-process run finishes the prune on resume; one of them wins each rename."""
    (tmp_path / "step-2").mkdir()
    _REAL_DISCARD(tmp_path / "step-2")
    _REAL_DISCARD(tmp_path / "step-2")
    assert list(tmp_path.iterdir()) == []
