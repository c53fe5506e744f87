"""Distillation losses against hand-worked values."""
from __future__ import annotations

import math

import pytest
import torch

from dr.losses.contrastive import own_group_mask
from dr.losses.distill import inbatch_margin_mse, kl_distill, margin_mse, pairwise_margin_mse


def test_pairwise_margin_mse_hand_worked():
    student = torch.tensor([[3.0, 1.0, 2.0], [0.0, 1.0, -1.0]])  # margins: (2, 1), (-1, 1)
    teacher = torch.tensor([[5.0, 4.0, 5.0], [2.0, 0.0, 1.0]])  # margins: (1, 0), (2, 1)
    # squared errors: (2-1)^2=1, (1-0)^2=1, (-1-2)^2=9, (1-1)^2=0 -> mean 11/4
    assert float(pairwise_margin_mse(student, teacher)) == pytest.approx(11 / 4)


def test_margin_mse_is_shift_invariant_per_query():
    student = torch.tensor([[3.0, 1.0]])
    assert float(pairwise_margin_mse(student, torch.tensor([[12.0, 10.0]]))) == 0.0
    assert float(pairwise_margin_mse(student, torch.tensor([[-8.0, -10.0]]))) == 0.0


def test_margin_mse_mask_and_empty_mask():
    s, t = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 3.0])
    assert float(margin_mse(s, t, torch.tensor([True, True, False]))) == pytest.approx(2.0)
    s.requires_grad_(True)
    empty = margin_mse(s, t, torch.zeros(3, dtype=torch.bool))
    assert float(empty.detach()) == 0.0
    empty.backward()  # a zero loss that still has a graph


def test_inbatch_margin_mse_hand_worked():
    # 2 queries, groups of 2 (positive, negative): columns 0,1 belong to query 0 and 2,3 to query 1
    scores = torch.tensor([[4.0, 3.0, 1.0, 2.0],
                           [0.0, 1.0, 5.0, 4.0]])
    teacher = torch.tensor([[9.0, float("nan"), 7.0, float("nan")],
                            [1.0, 2.0, 6.0, 0.0]])
    targets = torch.tensor([0, 2])
    own = own_group_mask(targets, 2, 4)
    # query 0: pairs with columns 2 (teacher known) and 3 (unknown -> skipped):
    #   student margin 4-1=3, teacher 9-7=2 -> error 1
    # query 1: columns 0 and 1: student 5-0=5 vs 6-1=5 -> 0; 5-1=4 vs 6-2=4 -> 0
    # own negatives (columns 1 for q0, 3 for q1) are excluded -> mean of (1, 0, 0) = 1/3
    assert float(inbatch_margin_mse(scores, teacher, targets, own)) == pytest.approx(1 / 3)


def test_inbatch_without_teacher_positive_is_skipped():
    scores = torch.tensor([[1.0, 0.0, 2.0, 0.0]])
    teacher = torch.tensor([[float("nan"), 0.0, 1.0, 0.0]])
    own = own_group_mask(torch.tensor([0]), 2, 4)
    assert float(inbatch_margin_mse(scores, teacher, torch.tensor([0]), own)) == 0.0


def test_kl_distill_hand_worked():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # softmax -> (0.75, 0.25)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert float(kl_distill(student, teacher)) == pytest.approx(expected, rel=1e-5)
    assert float(kl_distill(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)
    # a teacher temperature of 2 halves its logits
    assert float(kl_distill(student, 2 * teacher, temperature=2.0)) == pytest.approx(expected, rel=1e-5)
