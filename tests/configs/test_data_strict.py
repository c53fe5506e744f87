"""`strict` on every shipped data source, as the README says: `data.eval_sets.NAME.strict=false` composes
and reads leniently."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dr.config import CONFIG_DIR, register_resolvers
from dr.data.errors import DataFormatError

register_resolvers()
DATA_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "data").glob("*.yaml"))


@pytest.mark.parametrize("data", DATA_CONFIGS)
def test_every_shipped_data_source_has_strict_true(data):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"data={data}"])
    sources = {"train": cfg.data.train, **{f"eval_sets.{n}": s for n, s in cfg.data.eval_sets.items()}}
    for where, source in sources.items():
        assert OmegaConf.select(source, "strict", default="absent") is True, f"data={data}: {where}"


def _corrupt(data_dir: Path) -> None:
    with open(data_dir / "scifact" / "corpus.jsonl", "a") as f:
        f.write('{"_id": "d13", "title": "truncated\n')


def test_evaluate_config_with_strict_false_builds_the_sets(tiny_data_dir, caplog):
    from dr.evaluate import build_eval_sets

    _corrupt(tiny_data_dir)
    overrides = ["data.eval_sets.scifact-test.strict=false", "data.train.strict=false"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides)
    with caplog.at_level(logging.WARNING, logger="dr"):
        (test,) = build_eval_sets(cfg, ["scifact-test"])
        train = instantiate(cfg.data.train, _convert_="all")
    assert len(test.corpus) == 12 and len(train.corpus) == 12
    assert any("lenient read skipped 1 record(s)" in r.getMessage() for r in caplog.records)

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        strict = compose("evaluate")
    # hydra wraps what a target raises; the message still names the file and line
    with pytest.raises((DataFormatError, InstantiationException), match=r"corpus\.jsonl:13: malformed line"):
        build_eval_sets(strict, ["scifact-test"])
