"""Distillation losses: pure functions of student and teacher score tensors.

Margin-MSE (Hofstätter et al., 2020, "Improving Efficient Neural Ranking Models with Cross-Architecture
Knowledge Distillation"): the student learns the teacher's score *margin* between a positive and a
negative, not its scores, so teachers and students on different scales can be paired. TAS-B (Hofstätter
et al., SIGIR 2021, Eq. 6-8) adds the same loss over in-batch pairs with a second teacher.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def margin_mse(student_margin: torch.Tensor, teacher_margin: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean((student_margin - teacher_margin)^2) over the pairs where `mask` (same shape, bool) is True."""
    err = (student_margin - teacher_margin) ** 2
    if mask is None:
        return err.mean()
    if not mask.any():
        return student_margin.sum() * 0.0
    return err[mask].mean()


def pairwise_margin_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """student, teacher (B, G): each query's positive (column 0) and G-1 negatives. Margin-MSE over the
    B*(G-1) (positive, negative) pairs."""
    return margin_mse(student[:, :1] - student[:, 1:], teacher[:, :1] - teacher[:, 1:])


def inbatch_margin_mse(scores: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor,
                       exclude: torch.Tensor) -> torch.Tensor:
    """In-batch Margin-MSE (TAS-B Eq. 7): query i's positive against other in-batch passages.

    scores (B, P) student scores of every query against every in-batch passage; teacher (B, P) the
    in-batch teacher's scores, NaN where it gave none; targets (B,) the column of each query's positive;
    exclude (B, P) bool: columns not to pair (the query's own group, whose pairs the pairwise term has).
    """
    pos_s = scores.gather(1, targets[:, None])  # (B, 1)
    pos_t = teacher.gather(1, targets[:, None])  # (B, 1)
    mask = ~exclude & ~torch.isnan(teacher) & ~torch.isnan(pos_t)  # (B, P)
    return margin_mse(pos_s - scores, torch.nan_to_num(pos_t - teacher), mask)


def kl_distill(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student)) per query, averaged. student, teacher (B, G) over each
    query's candidate list (RocketQAv2 / listwise distillation); the student's scores already carry its
    own temperature."""
    target = F.softmax(teacher / temperature, dim=-1)
    return F.kl_div(F.log_softmax(student, dim=-1), target, reduction="batchmean")
