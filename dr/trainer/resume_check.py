"""The settings a run's batches and loss depend on, saved in each checkpoint and compared on resume.

A resumed run replays the batch schedule of the run that wrote the checkpoint. Resumed with another batch
size, seed, data or source of negatives, it would go on with other batches than the checkpoint's optimizer
state and step were made with, silently. So each checkpoint holds `resume_config.json`: the compared part
of the resolved config (`COMPARED`) and the process count; resuming with other values fails before any
model or data is loaded, listing each key with its old and new value. `resume_check=false` proceeds anyway
(the differences are still logged).

Not compared, being free to change on resume: max_steps, eval_every, save_every, keep_checkpoints,
log_every, tensorboard, test_sets, measures, depth, cache settings, show_progress, devices, hydra dirs
(none of them is in `COMPARED`; inside the compared groups `device` and `show_progress` are left out).
A checkpoint written before this file existed is resumed unchecked, with a warning.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger(__name__)
RESUME_CONFIG = "resume_config.json"
COMPARED = ("trainer.batch_size", "trainer.grad_accum", "trainer.negatives_per_query", "trainer.seed",
            "trainer.dev_queries", "trainer.cross_device", "data.train", "negatives", "miner", "sampler",
            "teacher", "objective", "loss")
# where work runs and how it is shown, not what is computed
_FREE = ("device", "show_progress")
_ABSENT = "(not set)"


class ResumeConfigError(ValueError):
    """Resuming with settings that change the batches or the loss of the checkpoint's run."""


def resume_config(config: Mapping, processes: int) -> dict[str, object]:
    """`{dotted key: value}` of each `COMPARED` key of a resolved config (plain dicts and lists, as
    `OmegaConf.to_container(cfg, resolve=True)` gives), and `processes`. A group set to null is None."""
    selected: dict[str, object] = {}
    for key in COMPARED:
        value: object = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        selected[key] = _without_free(value)
    selected["processes"] = processes
    return json.loads(json.dumps(selected))  # as it reads back from the checkpoint (tuples -> lists)


def _without_free(value: object) -> object:
    if isinstance(value, Mapping):
        return {k: _without_free(v) for k, v in value.items() if k not in _FREE}
    return value


def differences(saved: Mapping, current: Mapping, prefix: str = "") -> list[str]:
    """`key: old -> new` for each leaf that differs (a group on one side and null on the other is one
    entry); a key only one side has reads as `(not set)` on the other."""
    out = []
    for key in list(saved) + [k for k in current if k not in saved]:
        old, new = saved.get(key, _ABSENT), current.get(key, _ABSENT)
        name = f"{prefix}{key}"
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            out += differences(old, new, f"{name}.")
        elif old != new:
            out.append(f"{name}: {_show(old)} -> {_show(new)}")
    return out


def _show(value: object) -> str:
    return value if value is _ABSENT else json.dumps(value)


def check_resume_config(checkpoint: Path, current: Mapping, enforce: bool = True) -> None:
    """Compare `current` (from `resume_config`) with the one saved in `checkpoint`: raise
    ResumeConfigError listing the differences, or with `enforce=False` log them and go on."""
    try:
        saved = json.loads((checkpoint / RESUME_CONFIG).read_text())
    except FileNotFoundError:
        logger.warning("%s has no %s (written by an older dr): resuming without checking that the batch "
                       "settings are the same", checkpoint, RESUME_CONFIG)
        return
    found = differences(saved, current)
    if not found:
        return
    listed = "\n".join(f"  {d}" for d in found)
    if not enforce:
        logger.warning("resume_check=false: resuming %s with settings that differ from its run's:\n%s",
                       checkpoint, listed)
        return
    raise ResumeConfigError(
        f"resuming {checkpoint} with settings that change the batches or the loss of the run that wrote it "
        f"(checkpoint -> now):\n{listed}\nResume with the checkpoint's values, or add resume_check=false to "
        f"go on with the new ones anyway.")
