"""Hydra/OmegaConf glue shared by the command-line entry points (never imported by library code)."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


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
