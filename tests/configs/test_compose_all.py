"""Compose every yaml under configs/ and check that each `_target_` accepts the keys it is given."""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from dr.config import CONFIG_DIR, register_resolvers

register_resolvers()
ROOT = Path(CONFIG_DIR)
PRIMARY = ["evaluate", "train", "mine", "score"]
GROUP_FILES = sorted(p for p in ROOT.rglob("*.yaml") if p.parent != ROOT)


def _resolve_target(path: str):
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        mod, _, cls = module.rpartition(".")
        return getattr(getattr(importlib.import_module(mod), cls), name)


def _check_targets(node, where: str) -> int:
    """Recursively bind every `_target_` signature; returns how many were checked."""
    checked = 0
    if isinstance(node, DictConfig):
        for key in node:
            checked += _check_targets(node._get_node(key), f"{where}.{key}")
        if "_target_" in node:
            fn = _resolve_target(node["_target_"])
            kwargs = {k: None for k in node if not str(k).startswith("_")}
            sig = inspect.signature(fn)
            try:
                sig.bind_partial(**kwargs) if node.get("_partial_", False) else sig.bind(**kwargs)
            except TypeError as e:
                raise AssertionError(f"{where}: {node['_target_']} does not accept {sorted(kwargs)}: {e}") from e
            checked += 1
    elif OmegaConf.is_list(node):
        for i, item in enumerate(node):
            checked += _check_targets(item, f"{where}[{i}]")
    return checked


@pytest.mark.parametrize("name", PRIMARY)
def test_primary_config_composes_and_targets_bind(name):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=name)
    OmegaConf.resolve(cfg)
    assert _check_targets(cfg, name) >= 3


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_group_option_composes(path):
    group = str(path.parent.relative_to(ROOT))
    option = path.stem
    primary = "evaluate" if group in ("model", "data", "retriever") else "train"
    prefix = "+" if group == "experiment" else ""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=primary, overrides=[f"{prefix}{group}={option}"])
    if group == "experiment":  # an experiment is global: check every target it composes
        OmegaConf.resolve(cfg)
        assert _check_targets(cfg, f"+experiment={option}") >= 3
        return
    node = OmegaConf.select(cfg, group.replace("/", "."))
    assert node is not None
    if group == "model" and OmegaConf.is_missing(node, "name_or_path"):  # model=hf: a path is required
        OmegaConf.update(cfg, "model.name_or_path", "x")
    OmegaConf.resolve(cfg)
    _check_targets(node, f"{group}={option}")


def test_there_are_configs():
    assert len(GROUP_FILES) >= 6


@pytest.mark.parametrize("experiment, paths", [
    ("ance", ["miner.seed", "miner.index.seed"]),
    ("bm25_negatives", ["negatives.seed"]),
    ("star", ["miner.seed", "miner.index.seed"]),
    ("adore", ["objective.index.seed"]),
    ("jpq", ["quantizer.seed"]),
])
def test_trainer_seed_reaches_every_seeded_component(experiment, paths):
    """Two runs that differ in trainer.seed differ in every seed they use: the faiss index and quantizer
    training, the miners' and negatives' samplers (issue 26)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"+experiment={experiment}", "trainer.seed=7"])
    found = {p: OmegaConf.select(cfg, p) for p in paths}
    assert found == {p: 7 for p in paths}
