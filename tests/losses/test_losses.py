"""Losses against values worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from dr.losses import pairwise_hinge, ranknet, softmax_cross_entropy
from dr.losses.registry import LossConfig

# two queries, four passages; query 0's positive is column 0, query 1's is column 2
SCORES = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.5, 0.5, 1.5, 0.5]])
TARGETS = torch.tensor([0, 2])


def test_softmax_cross_entropy():
    q0 = -2.0 + math.log(math.exp(2) + math.exp(1) + 1 + math.exp(-1))
    q1 = -1.5 + math.log(3 * math.exp(0.5) + math.exp(1.5))
    assert float(softmax_cross_entropy(SCORES, TARGETS)) == pytest.approx((q0 + q1) / 2)


def test_pairwise_hinge():
    # q0 pairs: 1-2+1=0, 1-2+0<0, 1-2-1<0 -> 0, 0, 0;  q1: 1-1.5+0.5=0 three times -> 0
    assert float(pairwise_hinge(SCORES, TARGETS, margin=1.0)) == pytest.approx(0.0)
    # margin 2: q0: 1, 0, 0; q1: 1, 1, 1 -> mean 4/6
    assert float(pairwise_hinge(SCORES, TARGETS, margin=2.0)) == pytest.approx(4 / 6)


def test_ranknet():
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    want = (sp(-1) + sp(-2) + sp(-3) + 3 * sp(-1.0)) / 6
    assert float(ranknet(SCORES, TARGETS)) == pytest.approx(want)


def test_loss_config_dispatch_and_validation():
    assert float(LossConfig("ranknet")(SCORES, TARGETS)) == pytest.approx(float(ranknet(SCORES, TARGETS)))
    with pytest.raises(ValueError, match="loss.name"):
        LossConfig("softmax")


def test_register_loss(monkeypatch):
    from dr.losses import registry

    monkeypatch.setattr(registry, "LOSSES", dict(registry.LOSSES))
    registry.register_loss("top_score", lambda cfg, scores, targets, cand: -scores.gather(1, targets[:, None]).mean())
    # SCORES' positives score 2.0 (row 0, column 0) and 1.5 (row 1, column 2): the new loss is -(2 + 1.5) / 2
    assert float(LossConfig("top_score")(SCORES, TARGETS)) == pytest.approx(-1.75)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_loss("hinge", lambda *a: None)


def test_listwise_cross_entropy_hand_worked():
    from dr.losses import listwise_cross_entropy

    assert float(listwise_cross_entropy(torch.tensor([[2.0, 0.0, 0.0]]))) == pytest.approx(math.log1p(2 * math.exp(-2)))
    # [[1, 1]]: log 2; mean with the row above
    got = float(listwise_cross_entropy(torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, -math.inf]])))
    assert got == pytest.approx((math.log1p(2 * math.exp(-2)) + math.log(2)) / 2)


def test_adore_metric_weighted_pairwise_hand_worked():
    from dr.losses import metric_weighted_pairwise

    s = torch.tensor([2.0, 1.0, 0.5], requires_grad=True)  # current rank order; the relevant one is 2nd
    labels = torch.tensor([False, True, False])
    # pairs (rel 2nd, irrel 1st): |1/2 - 1| * log(1 + e^(2 - 1)); (rel 2nd, irrel 3rd): |1/2 - 1/3| * log(1 + e^(0.5 - 1))
    expected = (0.5 * math.log(1 + math.e) + (1 / 6) * math.log(1 + math.exp(-0.5))) / 2
    loss = metric_weighted_pairwise(s, labels)
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-6)
    # MRR@2: the 3rd rank's reciprocal rank is 0, so its pair weighs |1/2 - 0|
    expected_cut = (0.5 * math.log(1 + math.e) + 0.5 * math.log(1 + math.exp(-0.5))) / 2
    assert float(metric_weighted_pairwise(s, labels, cut=2).detach()) == pytest.approx(expected_cut, abs=1e-6)
    loss.backward()
    assert s.grad[1] < 0 and s.grad[0] > 0 and s.grad[2] > 0  # descent raises the relevant, lowers the others
    assert float(metric_weighted_pairwise(s, torch.tensor([False, False, False])).detach()) == 0.0


def test_own_group_only_cross_entropy_is_ance_nll():
    from dr.losses.registry import LossConfig

    scores = torch.tensor([[3.0, 1.0, 5.0, 0.0], [2.0, 4.0, 1.0, 0.5]])  # 2 queries x (pos, neg) groups
    targets = torch.tensor([0, 2])
    loss = LossConfig(name="cross_entropy", in_batch=False)(scores, targets, group=2)
    manual = (-torch.log_softmax(torch.tensor([3.0, 1.0]), 0)[0] - torch.log_softmax(torch.tensor([1.0, 0.5]), 0)[0]) / 2
    assert float(loss) == pytest.approx(float(manual), abs=1e-6)
    full = LossConfig(name="cross_entropy")(scores, targets, group=2)
    assert float(full) != pytest.approx(float(manual), abs=1e-3)


def test_hard_negative_cross_entropy_hand_worked():
    from dr.losses import hard_negative_cross_entropy as hcl

    scores, target = torch.tensor([[math.log(2), 0.0, math.log(3)]]), torch.tensor([0])
    assert float(hcl(scores, target)) == pytest.approx(math.log(3))  # InfoNCE: log(6 / 2)
    assert float(hcl(scores, target, beta=1.0)) == pytest.approx(math.log(7 / 2))  # Ng = 10 / 2 = 5
    assert float(hcl(scores, target, beta=1.0, tau_plus=0.1)) == pytest.approx(math.log((2 + 4.6 / 0.9) / 2))
    # tau_plus 0.9 with this positive: Ng = (5 - 0.9 * 2 * 2) / 0.1 = 14, above the clamp
    assert float(hcl(scores, target, beta=1.0, tau_plus=0.9)) == pytest.approx(math.log(16 / 2))
    # a stronger positive, p = 8: Ng = (5 - 0.5 * 2 * 8) / 0.5 = -6 is clamped to N * exp(min negative) = 2
    strong = torch.tensor([[math.log(8), 0.0, math.log(3)]])
    assert float(hcl(strong, target, beta=1.0, tau_plus=0.5)) == pytest.approx(math.log(10 / 8))
    # the paper's bound for cosines at temperature t is exp(-1/t) per negative; given explicitly
    assert float(hcl(strong, target, beta=1.0, tau_plus=0.5, min_score=-3.0)) == pytest.approx(
        math.log((8 + 2 * math.exp(-3.0)) / 8), rel=1e-5)
    with pytest.raises(ValueError, match="tau_plus"):
        hcl(scores, target, tau_plus=1.0)


def test_hard_negative_cross_entropy_reduces_to_infonce_and_handles_masks_and_scale():
    from dr.losses import hard_negative_cross_entropy as hcl

    assert float(hcl(SCORES, TARGETS)) == pytest.approx(float(softmax_cross_entropy(SCORES, TARGETS)))
    cand = torch.tensor([[True, True, False, False], [False, False, True, True]])  # own groups of 2
    assert float(hcl(SCORES, TARGETS, candidates=cand)) == pytest.approx(
        float(softmax_cross_entropy(SCORES, TARGETS, cand)))
    # beta > 0 puts more weight on the hardest negative, so the loss grows; temperature-0.05 scales stay finite
    assert float(hcl(SCORES, TARGETS, beta=0.5)) > float(hcl(SCORES, TARGETS))
    big = SCORES * 20
    for tau in (0.0, 0.1):
        value = hcl(big, TARGETS, beta=1.0, tau_plus=tau)
        assert torch.isfinite(value)
    # gradients flow to every score
    s = SCORES.clone().requires_grad_(True)
    hcl(s, TARGETS, beta=1.0, tau_plus=0.1).backward()
    assert torch.isfinite(s.grad).all() and (s.grad != 0).any()


def test_hard_negative_loss_config():
    cfg = LossConfig("hard_negative", beta=1.0, tau_plus=0.1)
    from dr.losses import hard_negative_cross_entropy as hcl

    assert float(cfg(SCORES, TARGETS)) == pytest.approx(float(hcl(SCORES, TARGETS, 1.0, 0.1)))
    with pytest.raises(ValueError, match="tau_plus"):
        LossConfig("hard_negative", tau_plus=1.2)


def test_matryoshka_loss_hand_worked():
    from dr.losses.matryoshka import matryoshka_loss, truncate

    # cosine model: q = [3, 4, 0] / 5, passages p+ = [0, 1, 0] and p- = [1, 0, 0] (unit already)
    q = torch.tensor([[0.6, 0.8, 0.0]])
    p = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

    def ce(a, b):  # scale 1 for hand values
        return softmax_cross_entropy(a @ b.T, torch.tensor([0]))

    # 3 dims: scores [0.8, 0.6], loss log(1 + e^(0.6 - 0.8)) = log(1 + e^-0.2) = 0.59813
    # 1 dim: q -> [1] (renormalized), p+ -> [0] (norm 0 stays 0), p- -> [1]: scores [0, 1],
    #        loss log(1 + e^1) = 1.31326
    # weights [1, 0.25]: 0.59813 + 0.32832 = 0.92645
    got = matryoshka_loss(q, p, [3, 1], [1.0, 0.25], normalize=True, loss_at=ce)
    assert float(got) == pytest.approx(0.59813 + 0.25 * 1.31326, abs=1e-4)
    assert float(matryoshka_loss(q, p, [3], [1.0], True, ce)) == pytest.approx(float(ce(q, p)), abs=1e-7)
    assert truncate(q, 1, normalize=False).tolist() == [[pytest.approx(0.6)]]
    with pytest.raises(ValueError):
        truncate(q, 4, normalize=True)


def test_matryoshka_loss_config():
    cfg = LossConfig(matryoshka_dims=[4, 2])
    assert cfg.matryoshka_weights == [1.0, 1.0]
    for bad in ({"matryoshka_dims": [4, 4]}, {"matryoshka_dims": [0]}, {"matryoshka_dims": [4, 2],
                "matryoshka_weights": [1.0]}, {"matryoshka_weights": [1.0]}):
        with pytest.raises(ValueError, match="matryoshka"):
            LossConfig(**bad)
