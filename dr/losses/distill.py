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


def query_distill_loss(student: torch.Tensor, teacher: torch.Tensor, passages: torch.Tensor, temperature: float,
                       mse_weight: float = 1.0, rank_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
    """Query-tower distillation against a fixed passage index: (total, mse, kl).

    student, teacher: (B, H) query embeddings; passages: (B, k, H) the teacher's top k passages of each
    query. mse = mean over queries of |student - teacher|^2 (embedding match); kl = KL(softmax(teacher
    scores / T) || softmax(student scores / T)) over each query's k passages (the ranking the index will
    produce); total = mse_weight * mse + rank_weight * kl.

    Hand-worked: student [1, 0], teacher [0, 1], passages [[1, 0], [0, 1]], T = 1: mse = 1 + 1 = 2;
    teacher scores [0, 1] -> p = [0.2689, 0.7311]; student scores [1, 0] -> log q = [-0.3133, -1.3133];
    kl = sum p (log p - log q) = 0.2689 * (-1.3133 + 0.3133) + 0.7311 * (-0.3133 + 1.3133) = 0.4621.

    >>> total, mse, kl = query_distill_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]),
    ...                                     torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), 1.0, 1.0, 0.5)
    >>> round(float(mse), 4), round(float(kl), 4), round(float(total), 4)
    (2.0, 0.4621, 2.2311)
    """
    mse = (student - teacher).pow(2).sum(-1).mean()
    s = torch.einsum("bh,bkh->bk", student, passages) / temperature
    t = torch.einsum("bh,bkh->bk", teacher, passages) / temperature
    kl = kl_distill(s, t)
    return mse_weight * mse + rank_weight * kl, mse, kl
