"""Ranking losses over a query-by-passage score matrix.

Layout used throughout: `scores` is (B, P) where P = W * B_local * G passages gathered from every
process (G = 1 positive + N negatives per query) and `targets` (B,) holds the column of each query's
positive. All other columns (other queries' positives and negatives) act as negatives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def softmax_cross_entropy(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """InfoNCE / DPR loss: -log softmax(scores)[target], averaged over queries.

    scores: (B, P) already divided by the temperature; targets: (B,) long. Returns a scalar.
    """
    return F.cross_entropy(scores, targets)


def _pos_and_negs(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pos = scores.gather(1, targets[:, None])  # (B, 1)
    neg_mask = torch.ones_like(scores, dtype=torch.bool)
    neg_mask.scatter_(1, targets[:, None], False)  # (B, P): every column except the positive
    return pos, scores, neg_mask


def pairwise_hinge(scores: torch.Tensor, targets: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """mean over (query, negative) pairs of max(0, margin - s_pos + s_neg). scores (B, P), targets (B,)."""
    pos, all_scores, neg_mask = _pos_and_negs(scores, targets)
    losses = F.relu(margin - pos + all_scores)  # (B, P)
    return losses[neg_mask].mean()


def ranknet(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """RankNet (Burges et al., 2005): mean over pairs of log(1 + exp(s_neg - s_pos)). scores (B, P)."""
    pos, all_scores, neg_mask = _pos_and_negs(scores, targets)
    losses = F.softplus(all_scores - pos)  # (B, P)
    return losses[neg_mask].mean()
