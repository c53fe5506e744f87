"""The objective interface: what each method declares, builds and adds, checked on tiny parts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from dr.config import CONFIG_DIR, register_resolvers
from dr.data.groups import Group
from dr.index import IndexConfig
from dr.index.pq import ProductQuantizer, build_pq_index
from dr.models.dual_encoder import DualEncoder, EncoderConfig
from dr.objectives.adore import AdoreObjective, FixedIndex
from dr.objectives.ar2 import AR2Objective
from dr.objectives.base import NEEDS, Objective, param_groups
from dr.objectives.contrastive import ContrastiveObjective
from dr.objectives.distill import DistillObjective
from dr.objectives.jpq import PQCandidates, QuantizerConfig
from dr.objectives.ranker import RankerObjective
from dr.trainer.callbacks import Callback
from dr.trainer.grad_cache import GradCache

register_resolvers()


def test_every_objective_declares_what_it_needs_from_the_trainer():
    for cls in (ContrastiveObjective, DistillObjective, AdoreObjective, RankerObjective, AR2Objective):
        assert issubclass(cls, Objective) and cls.needs and cls.needs <= NEEDS, cls
    assert AdoreObjective.needs == {"passage_embeddings"} and ContrastiveObjective.needs == {"passage_texts"}


def query_tower(tiny_model) -> DualEncoder:
    return DualEncoder(EncoderConfig(str(tiny_model), pooling="mean", shared=False, show_progress=False))


def test_adore_and_jpq_are_one_loop_over_two_kinds_of_candidates(tiny_model):
    """ADORE: a frozen flat index (no trained parameter of its own); JPQ: the PQ index, whose centroids
    are a submodule in their own optimizer group at the quantizer's learning rate."""
    enc = query_tower(tiny_model)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((64, enc.dim)).astype(np.float32)
    docids = [f"d{i}" for i in range(64)]
    positives = {"q1": ["d3"], "q2": ["d5", "d7"]}
    adore = AdoreObjective(enc, FixedIndex(emb, IndexConfig()),
                           docids, positives, depth=10, metric_cut=10)
    groups = [Group("q1", "goldfish ponds", ["d3"]), Group("q2", "tomato seeds", ["d5"])]
    inputs = adore.batch(groups)
    assert inputs == {"queries": ["goldfish ponds", "tomato seeds"], "positives": [[3], [5, 7]]}
    loss, logs = adore(**inputs)
    loss.backward()
    assert torch.isfinite(loss) and 0.0 <= logs["train_rr@10"] <= 1.0
    assert not any(p.requires_grad for p in enc.passage_model.parameters())
    assert len(adore.param_groups(0.01)) == 2  # only the query tower: decay and no decay

    qcfg = QuantizerConfig(subvectors=4, bits=2, opq=False, centroid_lr=1e-3, centroid_weight_decay=0.5)
    quantizer = ProductQuantizer(build_pq_index(emb, qcfg), docids, "fp")
    jpq = AdoreObjective(query_tower(tiny_model), PQCandidates(quantizer, qcfg), docids, positives, 10, 10)
    groups_of = jpq.param_groups(0.01)
    assert len(groups_of) == 3 and groups_of[2]["params"] == [quantizer.centroids]
    assert groups_of[2]["lr"] == 1e-3 and groups_of[2]["weight_decay"] == 0.5
    assert "candidates.quantizer.centroids" in dict(jpq.named_parameters())
    loss, _ = jpq(**jpq.batch(groups))
    loss.backward()
    assert quantizer.centroids.grad is not None and quantizer.centroids.grad.abs().sum() > 0


def test_positives_missing_from_the_index_are_named(tiny_model):
    emb = np.zeros((4, 32), dtype=np.float32)

    with pytest.raises(ValueError, match="1 positive passages are not in the index"):
        AdoreObjective(query_tower(tiny_model), FixedIndex(emb, IndexConfig()), ["a", "b", "c", "d"],
                       {"q": ["a", "zz"]}, 2, None)


def test_param_groups_put_special_parameters_in_their_own_groups():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 1))
    head = {id(model[2].weight): {"lr": 0.1, "weight_decay": 0.0}, id(model[2].bias): {"lr": 0.1, "weight_decay": 0.0}}
    groups = param_groups(model, 0.01, head)
    assert [len(g["params"]) for g in groups] == [1, 3, 2]  # decay: W0; no decay: b0, ln w, ln b; head: W2, b2
    assert groups[0]["weight_decay"] == 0.01 and groups[2]["lr"] == 0.1


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_refresh(self, trainer, record):
        self.events.append(("refresh", record["step"]))


def test_callbacks_have_no_op_defaults_and_the_trainer_dispatches_events():
    from dr.trainer.loop import Trainer

    rec, silent = Recorder(), Callback()
    trainer = Trainer.__new__(Trainer)  # dispatch needs only the callbacks
    trainer.callbacks = [silent, rec]
    for event in ("on_train_begin", "on_step_begin", "on_train_end"):
        trainer.dispatch(event)
    trainer.dispatch("on_step_end", {"loss": 1.0})
    trainer.dispatch("on_refresh", {"step": 5})
    assert rec.events == [("refresh", 5)]


def test_grad_cache_refuses_an_objective_without_the_embed_seam(tiny_model):
    enc = query_tower(tiny_model)
    adore = AdoreObjective(enc, FixedIndex(np.zeros((2, enc.dim), np.float32),
                                           IndexConfig()),
                           ["a", "b"], {}, 2, None)
    with pytest.raises(TypeError, match="GradCache cannot step it"):
        GradCache(4)(adore, adore, None, {"queries": ["x"], "positives": [[0]]}, 1)


def test_fn_ranker_threshold_reaches_the_miner_from_the_config(tiny_model):
    from dr.trainer.build import build_miner

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["miner=dynamic", "ranker=minilm", f"ranker.name_or_path={tiny_model}",
                                          "miner.fn_ranker_threshold=0.5", f"model.name_or_path={tiny_model}"])
    from hydra.utils import instantiate

    miner, mining_encoder = build_miner(cfg, instantiate(cfg.model, _convert_="all"), torch.device("cpu"))
    assert mining_encoder is None and miner.config.fn_ranker_threshold == 0.5
    assert (miner.config.fn_teacher, miner.config.fn_teacher_threshold) == ("ranker", 0.5)
    from types import SimpleNamespace

    texts = {"p1": "goldfish live in ponds", "p2": "tomato seeds"}
    corpus = SimpleNamespace(rows_of=lambda ids: list(ids), texts=lambda rows: [texts[r] for r in rows])
    fake_set = SimpleNamespace(corpus=corpus, queries={"q": "goldfish ponds"})
    scores = miner.teacher(fake_set, "q", ["p1", "p2"])  # the cross-encoder of ranker=
    assert len(scores) == 2 and np.all(np.isfinite(scores))
