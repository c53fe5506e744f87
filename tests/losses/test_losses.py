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
