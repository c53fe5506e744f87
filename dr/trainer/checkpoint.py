"""Checkpoints: model, optimizer, scheduler, RNG states, step, negatives; written atomically.

A checkpoint is written into `checkpoints/.tmp-step-N/` and renamed to `checkpoints/step-N/` only when
complete, so a kill during a save leaves the previous checkpoint as the latest usable one. Weights are
safetensors; optimizer/scheduler/RNG tensors are read back with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from dr.negatives.file import read_negatives, write_negatives
from dr.data.errors import ReadPolicy

logger = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainState:
    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    negatives_version: int = 0
    negatives_step: int | None = None  # step before which the negatives in hand were mined
    history: list[dict] = field(default_factory=list)


def save_checkpoint(root: Path, state: TrainState, model: torch.nn.Module, optimizer, scheduler,
                    negatives: dict[str, list[str]] | None, keep: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
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
    old = root / f".old-step-{state.step}"
    if final.exists():  # move aside first, so a kill here never leaves a half-deleted step-N
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    logger.info("checkpoint %s", final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old)
    return final


def save_rng_state(root: Path, step: int, rank: int) -> None:
    """Every process writes its own RNG state (dropout masks differ per process) before the main one
    assembles the checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, root / f".rng-step-{step}-rank{rank}.pt")


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / "trainer_state.json").exists()]


def resolve_resume(resume: bool | str | None, run_dir: Path) -> Path | None:
    """`true` -> latest checkpoint in this run directory (None if there is none); a path -> that one."""
    if resume in (None, False, "false", "False"):
        return None
    if resume in (True, "true", "True"):
        found = list_checkpoints(run_dir / "checkpoints")
        if not found:
            logger.warning("resume=true but %s has no checkpoint; starting from step 0", run_dir / "checkpoints")
            return None
        return found[-1]
    path = Path(str(resume))
    if (path / "checkpoints").is_dir():
        found = list_checkpoints(path / "checkpoints")
        if not found:
            raise FileNotFoundError(f"resume={path}: no complete checkpoint under {path / 'checkpoints'}")
        return found[-1]
    if not (path / "trainer_state.json").exists():
        raise FileNotFoundError(f"resume={path}: not a checkpoint (no trainer_state.json)")
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
