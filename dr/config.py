"""Hydra/OmegaConf glue shared by the command-line entry points (never imported by library code)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parent / "configs")  # inside the package: a wheel install has them


def data_dir() -> str:
    """`$DR_DATA_DIR`, else the repository's data/ (editable install), else ./data."""
    if "DR_DATA_DIR" in os.environ:
        return os.environ["DR_DATA_DIR"]
    repo_data = Path(__file__).resolve().parents[1] / "data"
    return str(repo_data if repo_data.is_dir() else Path.cwd() / "data")


def cache_dir() -> str:
    return os.environ.get("DR_CACHE", str(Path.home() / ".cache" / "dr"))


def register_resolvers() -> None:
    for name, fn in (("dr.data_dir", data_dir), ("dr.cache_dir", cache_dir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def eval_set_names(data: DictConfig, names: Sequence[str] | None, key: str) -> list[str]:
    """`names` (None: every eval set of the data config `data`), each checked to be one of its eval sets:
    a typo fails before anything is loaded, naming `key` (the option it came from) and the known sets."""
    known = list(data.eval_sets)
    if names is None:
        return known
    unknown = [n for n in names if n not in data.eval_sets]
    if unknown:
        raise ValueError(f"{key}: eval set(s) {unknown} not in data={data.name}; known: {known}")
    return list(names)
