"""Ranking losses over a query-by-passage score matrix.

Layout used throughout: `scores` is (B, P) where P = W * B_local * G passages gathered from every
process (G = 1 positive + N negatives per query) and `targets` (B,) holds the column of each query's
positive. All other columns (other queries' positives and negatives) act as negatives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def own_group_mask(targets: torch.Tensor, group: int, columns: int) -> torch.Tensor:
    """(B, P) bool: True on each query's own group (its positive and its own hard negatives)."""
    col = torch.arange(columns, device=targets.device)[None, :]
    return (col >= targets[:, None]) & (col < targets[:, None] + group)


def softmax_cross_entropy(scores: torch.Tensor, targets: torch.Tensor,
                          candidates: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE / DPR loss: -log softmax(scores)[target], averaged over queries.

    scores: (B, P) already divided by the temperature; targets: (B,) long; `candidates` (B, P) bool
    limits each query's softmax to those columns (ANCE: its positive and its own negatives).
    """
    if candidates is not None:
        scores = scores.masked_fill(~candidates, float("-inf"))
    return F.cross_entropy(scores, targets)


def listwise_cross_entropy(scores: torch.Tensor) -> torch.Tensor:
    """Mean over queries of -log softmax(scores)[:, 0]: `scores` (B, G), each row one query's candidates
    with the positive first (the ranker's loss, and AR2's). `softmax_cross_entropy` with every target 0.

    Example: scores [[2, 0, 0]] -> -log(e^2 / (e^2 + 2)) = log(1 + 2 e^-2) = 0.2396.
    """
    return softmax_cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long, device=scores.device))


def _pos_and_negs(scores: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pos = scores.gather(1, targets[:, None])  # (B, 1)
    neg_mask = torch.ones_like(scores, dtype=torch.bool) if candidates is None else candidates.clone()
    neg_mask.scatter_(1, targets[:, None], False)  # (B, P): every (candidate) column except the positive
    return pos, scores, neg_mask


def pairwise_hinge(scores: torch.Tensor, targets: torch.Tensor, margin: float = 1.0,
                   candidates: torch.Tensor | None = None) -> torch.Tensor:
    """mean over (query, negative) pairs of max(0, margin - s_pos + s_neg). scores (B, P), targets (B,)."""
    pos, all_scores, neg_mask = _pos_and_negs(scores, targets, candidates)
    losses = F.relu(margin - pos + all_scores)  # (B, P)
    return losses[neg_mask].mean()


def ranknet(scores: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """RankNet (Burges et al., 2005): mean over pairs of log(1 + exp(s_neg - s_pos)). scores (B, P).

    Over all in-batch columns this is STAR's loss (Zhan et al., SIGIR 2021): a two-way softmax of the
    positive against each random (other queries' passages) and each hard negative, one mean over all
    pairs."""
    pos, all_scores, neg_mask = _pos_and_negs(scores, targets, candidates)
    losses = F.softplus(all_scores - pos)  # (B, P)
    return losses[neg_mask].mean()


def hard_negative_cross_entropy(scores: torch.Tensor, targets: torch.Tensor, beta: float = 0.0,
                                tau_plus: float = 0.0, candidates: torch.Tensor | None = None,
                                min_score: float | None = None) -> torch.Tensor:
    """Contrastive loss with hard-negative weighting and debiasing (Robinson et al., ICLR 2021, "Contrastive
    Learning with Hard Negative Samples", HCL; the authors' `estimator='hard'`).

    Per query, with p = exp(s_pos), n_i = exp(s_i) over its N negatives and importance weights
    w_i = n_i^beta / mean_j n_j^beta (they average 1):
        Ng = (sum_i w_i n_i - tau_plus * N * p) / (1 - tau_plus),  clamped below at N * exp(min_score),
        loss = -log(p / (p + Ng)), averaged over queries.
    beta = 0 and tau_plus = 0 give `softmax_cross_entropy` exactly. beta > 0 weights each negative by how
    hard it is (a softmax over the negatives' scores with concentration beta); tau_plus > 0 subtracts the
    expected share of false negatives, the probability that a "negative" is in fact relevant. `beta` acts on
    the scores as given (already divided by the temperature, as in the authors' code, where it multiplies
    `neg.log()`); on cosine scores at temperature t it is a concentration of beta / t on the cosines.
    `min_score`: the clamp's bound on one negative's score; None uses the lowest negative score of the row,
    which for cosines is never below the paper's -1/t and is defined for dot products too.
    Computed in log space (no overflow at temperature 0.05).

    Example, one query, scores [log 2 | 0, log 3] (p = 2, n = [1, 3], N = 2):
    - beta 0, tau_plus 0: Ng = 4, loss = log(6 / 2) = log 3 = 1.0986 (InfoNCE);
    - beta 1: w = [1, 3] / 2, Ng = (1 * 1 + 3 * 3) / 2 = 5, loss = log(7 / 2) = 1.2528;
    - beta 1, tau_plus 0.1: Ng = (5 - 0.1 * 2 * 2) / 0.9 = 5.1111 (above the clamp, 2 * 1),
      loss = log(7.1111 / 2) = 1.2685;
    - beta 1, tau_plus 0.5 with s_pos = log 8: Ng = (5 - 0.5 * 2 * 8) / 0.5 = -6, clamped to 2 * exp(0) = 2,
      loss = log(10 / 8) = 0.2231.
    """
    if not 0.0 <= tau_plus < 1.0:
        raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")
    pos, _, neg_mask = _pos_and_negs(scores, targets, candidates)
    n = neg_mask.sum(dim=1, keepdim=True).to(scores.dtype)  # (B, 1) negatives per query

    def lse(x: torch.Tensor) -> torch.Tensor:  # log-sum-exp over each row's negatives
        return torch.logsumexp(x.masked_fill(~neg_mask, float("-inf")), 1, keepdim=True)

    # log sum_i w_i n_i = log N + LSE((beta + 1) s) - LSE(beta s)
    log_weighted = n.log() + lse((beta + 1.0) * scores) - lse(beta * scores)
    if tau_plus == 0.0:
        log_ng = log_weighted
    else:
        m = torch.maximum(pos, log_weighted).detach()  # stabilizer
        ng = ((log_weighted - m).exp() - tau_plus * n * (pos - m).exp()) / (1.0 - tau_plus)
        low = scores.masked_fill(~neg_mask, float("inf")).amin(1, keepdim=True) if min_score is None else \
            torch.full_like(pos, float(min_score))
        log_ng = torch.maximum(ng, n * (low - m).exp()).log() + m
    return (torch.logaddexp(pos, log_ng) - pos).mean()


def metric_weighted_pairwise(scores: torch.Tensor, labels: torch.Tensor, cut: int | None = None) -> torch.Tensor:
    """ADORE's LambdaRank-style loss for one query (Zhan et al., SIGIR 2021, Sec. 5).

    `scores` (n,): the query's scores of its candidates in their current rank order (best first, as
    retrieved); `labels` (n,) bool: relevant. Every (relevant i, irrelevant j) pair costs
    log(1 + exp(s_j - s_i)) weighted by |1/r_i - 1/r_j|, the change in reciprocal rank when i and j swap
    places (ranks 1-based; 1/r is 0 past `cut`, i.e. MRR@cut). Sum over pairs / number of pairs.
    """
    n = scores.shape[0]
    inv = 1.0 / torch.arange(1, n + 1, dtype=scores.dtype, device=scores.device)
    if cut is not None:
        inv[cut:] = 0
    weights = (inv[:, None] - inv[None, :]).abs()  # (n, n)
    pairs = labels[:, None] & ~labels[None, :]  # i relevant, j not
    if not pairs.any():
        return scores.sum() * 0.0
    cost = F.softplus(scores[None, :] - scores[:, None])  # [i, j] = log(1 + exp(s_j - s_i))
    return (cost * weights)[pairs].sum() / pairs.sum()
