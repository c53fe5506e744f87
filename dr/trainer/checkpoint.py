"""Checkpoints: model, optimizer, scheduler, RNG states, step, negatives, and small JSON extras (the run's
log line counts, see `dr.trainer.run_logs`; the settings compared on resume, `dr.trainer.resume_check`);
written atomically.

A checkpoint is written into `checkpoints/.tmp-step-N/`, closed by a `manifest.json` (every file and its
size) written last, and renamed to `checkpoints/step-N/` only when complete, so a kill during a save
leaves the previous checkpoint as the latest usable one. Pruning renames `step-N/` to `.trash-step-N/`
before deleting it, so a kill during pruning never leaves a half-deleted `step-N/`; `resume=true` (and
the next save) finishes such a prune. A `step-N/` whose files do not match its manifest is skipped with
a warning. Weights are safetensors; optimizer/scheduler/RNG tensors are read back with
`torch.load(weights_only=True)`.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from dr.negatives.file import read_negatives, write_negatives
from dr.data.errors import ReadPolicy

logger = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step-(\d+)$")
MANIFEST = "manifest.json"
# What every checkpoint has, for those written before the manifest existed (negatives.tsv is optional).
_ALWAYS = ("model.safetensors", "optimizer.pt", "scheduler.pt", "python_random.json", "trainer_state.json")


@dataclass
class TrainState:
    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    negatives_version: int = 0
    negatives_step: int | None = None  # step before which the negatives in hand were mined
    clusters: list[int] | None = None  # negative-aware batching: the query clusters of the last re-clustering
    history: list[dict] = field(default_factory=list)


def save_checkpoint(root: Path, state: TrainState, model: torch.nn.Module, optimizer, scheduler,
                    negatives: dict[str, list[str]] | None, keep: int,
                    extras: Mapping[str, object] | None = None) -> Path:
    """`extras`: small JSON files (name -> value) that go into the checkpoint and its manifest, e.g. the
    log line counts of `dr.trainer.run_logs`."""
    root.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(root, state.step)
    final = root / f"step-{state.step}"
    tmp = root / f".tmp-step-{state.step}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    for rank_file in root.glob(f".rng-step-{state.step}-rank*.pt"):  # one per process, see save_rng_state
        os.replace(rank_file, tmp / rank_file.name.replace(f".rng-step-{state.step}-", "rng-"))
    if negatives is not None:
        write_negatives(tmp / "negatives.tsv", negatives)
    (tmp / "python_random.json").write_text(json.dumps(_python_rng_state()))
    (tmp / "trainer_state.json").write_text(json.dumps(asdict(state), indent=2))
    for name, value in (extras or {}).items():
        (tmp / name).write_text(json.dumps(value, indent=2))
    _write_manifest(tmp, keep)  # last: its presence says every other file was written
    if final.exists():  # a re-save of this step: move the old one aside first, never half-delete it
        _discard(final)
    os.replace(tmp, final)
    logger.info("checkpoint %s", final)
    complete, incomplete = scan_checkpoints(root)
    for old, problem in incomplete:  # unusable (e.g. an older version's half-deleted prune)
        logger.warning("removing incomplete checkpoint %s: %s", old, problem)
        _discard(old)
    for old in complete[:-keep]:
        _discard(old)
    return final


def _write_manifest(directory: Path, keep: int) -> None:
    """Files and sizes, and `keep`, the number of checkpoints this save prunes to (see `_finish_pruning`)."""
    files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.name != MANIFEST}
    (directory / MANIFEST).write_text(json.dumps({"files": files, "keep": keep}, indent=2))


def _discard(path: Path) -> None:
    """Rename to `.trash-NAME` (atomic), then delete: a kill while deleting leaves only trash behind."""
    trash = path.with_name(f".trash-{path.name}")
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(path, trash)
    except OSError:
        if path.exists():
            raise
        return  # another process of this run moved it first (all of them finish a prune on resume)
    shutil.rmtree(trash, ignore_errors=True)  # what a concurrent deleter leaves is cleared next time


def _finish_pruning(root: Path) -> None:
    """Finish what a save killed while pruning left undone: its trash, and checkpoints older than the
    `keep` latest (the `keep` in the latest one's manifest). Needed on resume because no later save may
    come: a kill during the last save's pruning, then a resume that only evaluates and exports."""
    _clear_trash(root)
    complete, _ = scan_checkpoints(root)
    keep = _manifest(complete[-1]).get("keep") if complete else None
    if isinstance(keep, int) and keep > 0:
        for old in complete[:-keep]:
            _discard(old)


def _manifest(path: Path) -> dict:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _clear_trash(root: Path) -> None:
    """Delete what a prune killed midway left. Every process of a multi-process run does this at once on
    resume, hence `ignore_errors`; none writes trash then."""
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith((".trash-", ".old-step-")):
                shutil.rmtree(path, ignore_errors=True)


def _clear_leftovers(root: Path, step: int) -> None:
    """Delete what killed saves and prunes left: trash, unfinished `.tmp-step-*`, and RNG files of other
    steps (this step's were just written by every process and are about to be moved in)."""
    _clear_trash(root)
    for path in root.iterdir():
        if path.name.startswith(".tmp-step-") and path.is_dir():
            shutil.rmtree(path)
        elif path.name.startswith(".rng-step-") and not path.name.startswith(f".rng-step-{step}-"):
            path.unlink()


def save_rng_state(root: Path, step: int, rank: int) -> None:
    """Every process writes its own RNG state (dropout masks differ per process) before the main one
    assembles the checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, root / f".rng-step-{step}-rank{rank}.pt")


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` is not a complete checkpoint, or None when it is.

    With a manifest: every listed file must exist with its listed size. Without one (written before
    manifests existed, or not a checkpoint at all): complete when the files every checkpoint has are
    there, `model.safetensors`, `optimizer.pt`, `scheduler.pt`, `python_random.json`,
    `trainer_state.json` and at least one `rng-rank*.pt`, so older runs still resume. (An older
    checkpoint that lost only its optional `negatives.tsv` cannot be told apart from one that never had it.)
    """
    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError, TypeError) as e:
            return f"unreadable {MANIFEST} ({e})"
        missing = sorted(name for name in files if not (path / name).is_file())
        if missing:
            return f"missing {', '.join(missing)}"
        wrong = sorted(name for name, size in files.items() if (path / name).stat().st_size != size)
        return f"size differs from {MANIFEST}: {', '.join(wrong)}" if wrong else None
    missing = [name for name in _ALWAYS if not (path / name).is_file()]
    missing += [] if any(path.glob("rng-rank*.pt")) else ["rng-rank*.pt"]
    return f"no {MANIFEST} and missing {', '.join(missing)}" if missing else None


def scan_checkpoints(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """`(complete, [(incomplete, why), ...])` among the `step-N` directories under `root`, oldest first."""
    if not root.is_dir():
        return [], []
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir())
    complete, incomplete = [], []
    for _, path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            complete.append(path)
        else:
            incomplete.append((path, problem))
    return complete, incomplete


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first; each incomplete one is skipped with a warning."""
    complete, incomplete = scan_checkpoints(root)
    for path, problem in incomplete:
        logger.warning("skipping incomplete checkpoint %s: %s", path, problem)
    return complete


def resume_requested(resume: bool | str | None) -> bool:
    """Whether `resume=` asks to continue a checkpoint (`true` or a path) rather than start afresh."""
    return resume not in (None, False, "false", "False")


def resolve_resume(resume: bool | str | None, run_dir: Path) -> Path | None:
    """`true` -> latest complete checkpoint in this run directory (None if there is none); a path -> that
    one, or the latest complete one under `PATH/checkpoints`."""
    if not resume_requested(resume):
        return None
    if resume in (True, "true", "True"):
        _finish_pruning(run_dir / "checkpoints")
        found = list_checkpoints(run_dir / "checkpoints")
        if not found:
            logger.warning("resume=true but %s has no complete checkpoint; starting from step 0",
                           run_dir / "checkpoints")
            return None
        return found[-1]
    path = Path(str(resume))
    if (path / "checkpoints").is_dir():
        found = list_checkpoints(path / "checkpoints")
        if not found:
            raise FileNotFoundError(f"resume={path}: no complete checkpoint under {path / 'checkpoints'}")
        return found[-1]
    if not (path / "trainer_state.json").exists() and not (path / MANIFEST).exists():
        raise FileNotFoundError(f"resume={path}: not a checkpoint (no trainer_state.json)")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise FileNotFoundError(f"resume={path}: incomplete checkpoint: {problem}")
    return path


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler,
                    rank: int = 0) -> tuple[TrainState, dict | None]:
    """Restore everything in place (this process's RNG state); returns the state and the negatives."""
    load_model(model, str(path / "model.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True, map_location="cpu"))
    rng_file = path / f"rng-rank{rank}.pt"
    if not rng_file.exists():
        raise FileNotFoundError(f"{path} has no RNG state for process {rank}: resume with the same process count")
    rng = torch.load(rng_file, weights_only=True, map_location="cpu")
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    state_py = json.loads((path / "python_random.json").read_text())
    random.setstate((state_py[0], tuple(state_py[1]), state_py[2]))
    state = TrainState(**json.loads((path / "trainer_state.json").read_text()))
    negatives = None
    if (path / "negatives.tsv").exists():
        negatives, _ = read_negatives(path / "negatives.tsv", ReadPolicy())
    logger.info("resumed from %s at step %d", path, state.step)
    return state, negatives


def _python_rng_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
