"""The settings saved in a checkpoint and compared on resume: which keys count, how differences read."""
from __future__ import annotations

import json
import logging

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dr.config import CONFIG_DIR, register_resolvers
from dr.trainer.resume_check import (RESUME_CONFIG, ResumeConfigError, check_resume_config, differences,
                                     resume_config)

register_resolvers()


def _compared(*overrides: str, processes: int = 1) -> dict:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=bm25_negatives", *overrides])
    return resume_config(OmegaConf.to_container(cfg, resolve=True), processes)


@pytest.mark.parametrize("override", [
    "trainer.max_steps=7", "trainer.eval_every=3", "trainer.save_every=3", "trainer.keep_checkpoints=4",
    "trainer.log_every=2", "trainer.tensorboard=false", "test_sets=[scifact-test]", "measures=[nDCG@10]",
    "depth=100", "cache_dir=/elsewhere", "cache_embeddings=false", "model.show_progress=false",
    "trainer.lr=1e-3", "resume=true", "resume_check=false",
])
def test_settings_free_to_change_on_resume_are_not_compared(override):
    assert differences(_compared(), _compared(override)) == []


@pytest.mark.parametrize(("override", "key"), [
    ("trainer.batch_size=8", "trainer.batch_size"), ("trainer.grad_accum=2", "trainer.grad_accum"),
    ("trainer.negatives_per_query=3", "trainer.negatives_per_query"),
    ("trainer.seed=1", ("trainer.seed", "negatives.seed")),  # the negatives' sampling follows trainer.seed
    ("trainer.dev_queries=7", "trainer.dev_queries"), ("trainer.cross_device=false", "trainer.cross_device"),
    ("data.train.split=dev", "data.train.split"), ("negatives.per_query=5", "negatives.per_query"),
    ("loss=hinge", "loss"),  # loss: null (the default) -> the hinge group
    ("sampler=tas_balanced", "sampler"),
])
def test_settings_that_change_the_batches_are_compared(override, key):
    found = differences(_compared(), _compared(override))
    assert found and all(line.startswith(key) for line in found), found


def test_process_count_is_compared():
    assert differences(_compared(), _compared(processes=2)) == ["processes: 1 -> 2"]


def test_devices_and_progress_bars_inside_compared_groups_are_left_out():
    config = {"miner": {"depth": 200, "show_progress": True, "index": {"factory": "Flat", "device": "auto"}}}
    assert resume_config(config, 1)["miner"] == {"depth": 200, "index": {"factory": "Flat"}}


def test_differences_name_each_key_with_old_and_new_value():
    saved = {"trainer.seed": 42, "negatives": None, "miner": {"depth": 200, "window": [0, 200]}}
    now = {"trainer.seed": 1, "negatives": {"per_query": 30}, "miner": {"depth": 200, "window": [0, 100]},
           "processes": 2}
    assert differences(saved, now) == ["trainer.seed: 42 -> 1", 'negatives: null -> {"per_query": 30}',
                                       "miner.window: [0, 200] -> [0, 100]", "processes: (not set) -> 2"]


def test_check_raises_listing_the_keys_unless_told_to_go_on(tmp_path, caplog):
    (tmp_path / RESUME_CONFIG).write_text(json.dumps({"trainer.batch_size": 4, "processes": 1}))
    check_resume_config(tmp_path, {"trainer.batch_size": 4, "processes": 1})
    with pytest.raises(ResumeConfigError, match=r"(?s)trainer\.batch_size: 4 -> 2.*resume_check=false"):
        check_resume_config(tmp_path, {"trainer.batch_size": 2, "processes": 1})
    with caplog.at_level(logging.WARNING, logger="dr"):
        check_resume_config(tmp_path, {"trainer.batch_size": 2, "processes": 1}, enforce=False)
    assert any("trainer.batch_size: 4 -> 2" in r.getMessage() for r in caplog.records)


def test_checkpoint_without_saved_settings_resumes_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dr"):
        check_resume_config(tmp_path, {"trainer.batch_size": 2})
    assert any(RESUME_CONFIG in r.getMessage() for r in caplog.records)
