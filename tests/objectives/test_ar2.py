"""AR2: the two losses on hand-worked values, the phase schedule, config checks, and that one optimizer
step of each phase moves only the model that phase trains."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import PASSAGES, QUERIES

from dr.losses.adversarial import adversarial_reward, ar2_retriever_loss
from dr.losses.contrastive import listwise_cross_entropy
from dr.models.cross_encoder import CrossEncoder, CrossEncoderConfig
from dr.models.dual_encoder import DualEncoder, EncoderConfig
from dr.objectives.ar2 import AR2Config, AR2Objective, phase


def test_listwise_cross_entropy_by_hand():
    # softmax over [2, 0, 0]: the positive's probability is e^2 / (e^2 + 2) = 7.389 / 9.389 = 0.78699
    got = listwise_cross_entropy(torch.tensor([[2.0, 0.0, 0.0]]))
    assert float(got) == pytest.approx(-math.log(0.786986), abs=1e-5)  # 0.23956
    # two queries: the mean; an even row of three costs ln 3
    got = listwise_cross_entropy(torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    assert float(got) == pytest.approx((0.239560 + 1.098612) / 2, abs=1e-5)


def test_retriever_loss_by_hand():
    # retriever [0, 0]: log p = [-0.693147, -0.693147]. ranker [ln 3, 0]: q = [0.75, 0.25];
    # rewards r = [log sigmoid(0), log sigmoid(ln 3)] = [ln 0.5, ln 0.75] = [-0.693147, -0.287682]
    retriever = torch.zeros(1, 2, requires_grad=True)
    ranker = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    total, distill, adv = ar2_retriever_loss(retriever, ranker, adv_lambda=0.5)
    assert distill.item() == pytest.approx(0.75 * 0.693147 + 0.25 * 0.693147, abs=1e-5)  # 0.693147
    assert adv.item() == pytest.approx(-0.693147 * -0.693147 + -0.287682 * -0.693147, abs=1e-5)  # 0.679859
    assert total.item() == pytest.approx(0.5 * 0.693147 + 0.5 * 0.679859, abs=1e-5)  # 0.686503
    total.backward()
    assert ranker.grad is None  # the ranker's logits are constants of the retriever's loss
    # d adv / d s_1 = r_1 - p_1 (r_0 + r_1) = -0.287682 + 0.5 * 0.980829 = 0.202733;
    # d distill / d s_1 = p_1 - q_1 = 0.25; total: 0.5 * 0.202733 + 0.5 * 0.25 = 0.226366
    assert float(retriever.grad[0, 1]) == pytest.approx(0.226366, abs=1e-5)
    assert float(retriever.grad.sum()) == pytest.approx(0.0, abs=1e-6)  # softmax gradients sum to zero


def test_retriever_loss_weights_temperature_and_reduction():
    retriever = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    ranker = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    _, distill, adv_sum = ar2_retriever_loss(retriever, ranker, adv_lambda=1.0)
    _, _, adv_mean = ar2_retriever_loss(retriever, ranker, adv_reduction="mean")
    assert float(adv_sum) == pytest.approx(2 * float(adv_mean))
    only_distill, d, _ = ar2_retriever_loss(retriever, ranker, adv_lambda=0.0)
    assert float(only_distill) == pytest.approx(float(d))
    # temperature 2 on logits [ln 3, 0]: q = softmax([ln 3 / 2, 0]) = [sqrt 3, 1] / (sqrt 3 + 1)
    _, d2, _ = ar2_retriever_loss(torch.zeros(1, 2), ranker[:1], ranker_temperature=2.0)
    assert float(d2) == pytest.approx(math.log(2.0), abs=1e-6)  # uniform retriever: ln 2 whatever q is
    q0 = math.sqrt(3) / (math.sqrt(3) + 1)
    lp = torch.log_softmax(torch.tensor([1.0, 0.0]), 0)
    _, d3, _ = ar2_retriever_loss(torch.tensor([[1.0, 0.0]]), ranker[:1], ranker_temperature=2.0)
    assert float(d3) == pytest.approx(-(q0 * float(lp[0]) + (1 - q0) * float(lp[1])), abs=1e-6)
    assert adversarial_reward(torch.tensor([[0.0, 0.0, 10.0]]))[0, 2] < -9.9  # fooled: very negative
    with pytest.raises(ValueError, match="two \\(B, G\\) tensors"):
        ar2_retriever_loss(torch.zeros(2, 3), torch.zeros(2, 2))


def test_phase_schedule():
    assert [phase(s, 2) for s in range(6)] == ["ranker"] * 2 + ["retriever"] * 2 + ["ranker"] * 2
    assert [phase(s, 1, 3) for s in range(9)] == (["ranker"] + ["retriever"] * 3) * 2 + ["ranker"]
    assert phase(499, 500, 1500) == "ranker" and phase(500, 500, 1500) == "retriever"
    assert phase(1999, 500, 1500) == "retriever" and phase(2000, 500, 1500) == "ranker"
    with pytest.raises(ValueError):
        phase(0, 0)


def test_config_checks():
    cfg = AR2Config(phase_steps=2, retriever_phase_steps=4)
    assert cfg.iteration_steps == 6 and cfg.phase(1) == "ranker" and cfg.phase(2) == "retriever"
    cfg.check_refresh(6)
    cfg.check_refresh(12)
    for bad in (0, 4, 8):
        with pytest.raises(ValueError, match="positive multiple of .* = 6"):
            cfg.check_refresh(bad)
    assert AR2Config(phase_steps=3).iteration_steps == 6
    for kw in ({"phase_steps": 0}, {"adv_lambda": 1.5}, {"adv_reduction": "max"}, {"ranker_temperature": 0.0},
               {"ranker_lr": -1.0}, {"retriever_phase_steps": 0}):
        with pytest.raises(ValueError):
            AR2Config(**kw)


def _objective(path) -> AR2Objective:
    torch.manual_seed(0)
    retriever = DualEncoder(EncoderConfig(str(path), pooling="mean", passage_max_length=32, show_progress=False))
    ranker = CrossEncoder(CrossEncoderConfig(str(path), max_length=48, show_progress=False))
    return AR2Objective(retriever, ranker, AR2Config(phase_steps=1))


def _batch():
    texts = {d: f"{t} {x}" for d, (t, x) in PASSAGES.items()}
    queries = [QUERIES["q1"], QUERIES["q2"]]
    return queries, [texts["d1"], texts["d4"], texts["d7"], texts["d4"], texts["d1"], texts["d10"]]  # groups of 3


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_each_phase_moves_only_its_model(tiny_model):
    objective = _objective(tiny_model)
    objective.train()
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-2, weight_decay=0.01)
    queries, passages = _batch()
    for active, moved, idle in (("ranker", objective.ranker, objective.retriever),
                                ("retriever", objective.retriever, objective.ranker)):
        objective.active = active
        before_moved, before_idle = _snapshot(moved), _snapshot(idle)
        loss, logs = objective(queries, passages)
        assert torch.isfinite(loss) and logs["ranker_phase"] == float(active == "ranker")
        loss.backward()
        assert all(p.grad is None for p in idle.parameters())  # AdamW skips them: no decay, no moments
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        assert _changed(before_moved, moved), active
        assert not _changed(before_idle, idle), active
    assert objective.ranker.training  # the retriever phase scores with the ranker in eval mode, then restores it
    assert set(logs) >= {"loss", "loss_distill", "loss_adv", "retriever_acc", "ranker_acc"}


def test_retriever_phase_loss_matches_the_pure_function(tiny_model):
    objective = _objective(tiny_model).eval()
    objective.active = "retriever"
    queries, passages = _batch()
    loss, _ = objective(queries, passages)
    with torch.no_grad():
        scores = objective.retriever_scores(queries, passages, 3)
        logits = objective.ranker_logits(queries, passages, 3)
    q = objective.retriever.encode_queries(queries)
    p = objective.retriever.encode_passages(passages).reshape(2, 3, -1)
    expected_scores = torch.einsum("bh,bgh->bg", torch.tensor(q), torch.tensor(p))  # temperature 1
    torch.testing.assert_close(scores, expected_scores, atol=1e-5, rtol=0)
    assert loss.item() == pytest.approx(ar2_retriever_loss(scores, logits)[0].item(), abs=1e-5)
    with pytest.raises(ValueError, match="negatives_per_query >= 1"):
        objective(queries, passages[:2])
