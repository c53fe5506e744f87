"""The cross-group validation of dr.train, called directly on composed configs: every experiment passes,
and each wrong combination fails with a message that says what to change, before anything is loaded
(no data directory and no model exist here)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from dr.config import CONFIG_DIR, register_resolvers
from dr.objectives.base import OPTIONAL_GROUPS, ConfigError, ObjectiveConfig
from dr.train import validate

register_resolvers()
EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
OBJECTIVES = sorted(p.stem for p in (Path(CONFIG_DIR) / "objective").glob("*.yaml"))


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_validates(name):
    method, tcfg, test_names, dense = validate(composed(f"+experiment={name}"))
    assert isinstance(method, ObjectiveConfig) and tcfg.max_steps > 0 and callable(dense)


def test_every_objective_is_an_objective_config_with_known_groups():
    assert {"contrastive", "distill", "adore", "jpq", "ranker", "ar2"} <= set(OBJECTIVES)
    for name in OBJECTIVES:
        from hydra.utils import instantiate

        method = instantiate(composed(f"objective={name}").objective)
        assert isinstance(method, ObjectiveConfig) and method.name == name
        assert method.uses <= set(OPTIONAL_GROUPS) and set(method.requires) <= method.uses


def test_the_default_is_contrastive_with_the_cross_entropy_loss():
    method, *_ = validate(composed())
    assert method.name == "contrastive"


@pytest.mark.parametrize(("overrides", "message"), [
    # a group the chosen method would ignore
    (["teacher=scifact"], "objective=contrastive does not use teacher=...: set teacher=null (distillation"),
    (["sampler=tas_balanced"], "objective=contrastive takes sampler=ngame or sampler=curriculum"),
    (["quantizer=jpq"], "objective=contrastive does not use quantizer=...: set quantizer=null (JPQ is objective=jpq)"),
    (["+experiment=adore", "loss=hinge"], "objective=adore does not use loss=..."),
    (["+experiment=adore", "negatives=bm25"], "objective=adore does not use negatives=..."),
    (["+experiment=adore", "miner=dynamic"], "objective=adore does not use miner=..."),
    (["+experiment=jpq", "negatives=bm25"], "objective=jpq does not use negatives=..."),
    (["+experiment=ar2", "negatives=bm25"], "objective=ar2 does not use negatives=..."),
    (["+experiment=tas_balanced", "negatives=bm25"], "objective=distill does not use negatives=..."),
    (["+experiment=cross_encoder", "miner=dynamic"], "objective=ranker does not use miner=..."),
    (["ranker=minilm"], "reads ranker=... only as the miner's false-negative teacher"),
    # a group the method needs
    (["objective=distill", "teacher=scifact"], "objective=distill needs sampler=...: pairs are drawn"),
    (["objective=distill", "sampler=tas_balanced"], "objective=distill needs teacher=..."),
    (["objective=jpq", "model.shared=false"], "objective=jpq needs quantizer=..."),
    (["objective=ranker"], "objective=ranker needs ranker=..."),
    (["objective=ar2", "miner=dynamic", "miner.refresh_every=10"], "choose it with ranker="),
    (["objective=ar2", "ranker=minilm"], "set miner=dynamic"),
    (["miner=dynamic", "miner.fn_ranker_threshold=0.5"], "choose the cross-encoder with ranker=..."),
    # the method's own combination
    (["negatives=bm25", "miner=dynamic"], "negatives=... or miner=..., not both"),
    (["objective=adore"], "objective=adore trains the query tower only against a frozen passage index: set "
                          "model.shared=false"),
    (["+experiment=jpq", "model.shared=true"], "objective=jpq trains the query tower only"),
    (["+experiment=ar2", "miner.refresh_every=6"], "miner.refresh_every=6 must be a positive multiple"),
    (["+experiment=ar2", "miner.model=/some/model"], "set miner.model=null"),
    (["+experiment=ar2", "trainer.negatives_per_query=0"], "set trainer.negatives_per_query >= 1"),
    (["+experiment=ar2", "ranker=minilm", "miner.fn_ranker_threshold=0.5"], "set miner.fn_ranker_threshold=null"),
    # trainer settings the method cannot honour
    (["+experiment=tas_balanced", "trainer.grad_cache_chunk=4"], "objective=distill cannot be stepped by GradCache"),
    (["+experiment=ar2", "trainer.grad_cache_chunk=4"], "set trainer.grad_cache_chunk=0"),
    (["+experiment=adore", "trainer.cross_device=true"], "trainer.cross_device=true would be ignored"),
    (["trainer.select_metric=MAP"], "trainer.select_metric='MAP' is not in measures"),
    (["retriever=bm25"], "dr.train evaluates the model it trains: use retriever=dense"),
    (["test_sets=[scifact-tst]"], "eval set(s) ['scifact-tst'] not in data=scifact"),
])
def test_wrong_combinations_fail_in_validate(overrides, message):
    cfg = composed(*overrides)
    with pytest.raises(ValueError) as err:
        validate(cfg)
    assert message in str(err.value)


def test_config_errors_are_value_errors():
    assert issubclass(ConfigError, ValueError)


def test_contrastive_settings_that_it_honours_pass():
    for overrides in (["trainer.cross_device=false"], ["trainer.grad_cache_chunk=4"], ["loss=hinge"],
                      ["miner=dynamic", "ranker=minilm", "miner.fn_ranker_threshold=0.5"]):
        validate(composed(*overrides))
