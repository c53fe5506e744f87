"""AR2's two losses (Zhang et al., ICLR 2022, "Adversarial Retriever-Ranker for Dense Text Retrieval"),
as pure functions of per-group score tensors.

Every query has one group of G candidates, the positive in column 0 and G - 1 negatives retrieved by the
dual encoder. The ranker (cross-encoder) learns to find the positive among them (listwise softmax
cross-entropy); the retriever learns against the ranker with a minimax term plus a distillation
regularizer towards the ranker's distribution over the same candidates.

Authors' code (microsoft/AR2, AR2/wiki/co_training_wiki_train.py, `train`): the ranker phase is
`CrossEntropyLoss(relevance_logits, zeros)` (plus `0 * binary_logits.sum()`, which only keeps an unused
head in the DDP graph: no regularization of the ranker); the retriever phase is
`adv_lambda * adv_loss + (1 - adv_lambda) * normal_loss` with
`normal_loss = -sum(softmax(ranker / temperature_normal) * log softmax(retriever)) / B` and
`adv_loss = sum(log softmax([l_pos, l_i])[0] * log softmax(retriever)_i)` summed (not averaged) over
the batch, run with `--adv_lambda 0.5 --temperature_normal=1` (AR2/wiki/README.md). They take
`log(p + 1e-7)`; we use log-softmax, which differs only where a probability is below ~1e-7.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["sum", "mean"]


def adversarial_reward(ranker_scores: torch.Tensor) -> torch.Tensor:
    """(B, G) -> (B, G): log sigmoid(l_pos - l_i), the log-probability that the ranker prefers the positive
    over candidate i (log 0.5 for the positive itself). Near 0 for a candidate the ranker dismisses, very
    negative for one that fools it."""
    return F.logsigmoid(ranker_scores[:, :1] - ranker_scores)


def ar2_retriever_loss(retriever_scores: torch.Tensor, ranker_scores: torch.Tensor, adv_lambda: float = 0.5,
                       ranker_temperature: float = 1.0, adv_reduction: Reduction = "sum"
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The retriever's loss: (total, distillation term, adversarial term).

    `retriever_scores` (B, G): the dual encoder's scores of each query's candidates (positive first);
    `ranker_scores` (B, G): the cross-encoder's logits of the same pairs, used as constants (detached).
    With p = softmax(retriever_scores), q = softmax(ranker_scores / ranker_temperature) and
    r_i = log sigmoid(l_0 - l_i):

        distill = mean_b [ -sum_i q_bi log p_bi ]           (cross-entropy towards the ranker)
        adv     = sum_b sum_i r_bi log p_bi                  (`adv_reduction="mean"`: mean over b)
        total   = adv_lambda * adv + (1 - adv_lambda) * distill

    Minimizing `adv` raises log p_i most where r_i is most negative, i.e. the retriever moves probability
    towards the candidates that fool the ranker (the paper's minimax game, as the authors implement it).

    Worked example (B = 1, G = 2): retriever [0, 0] -> log p = [-ln 2, -ln 2]; ranker [ln 3, 0] ->
    q = [3/4, 1/4], r = [log sigmoid(0), log sigmoid(ln 3)] = [-ln 2, ln 3/4]. Then
    distill = ln 2 = 0.6931; adv = (-ln 2)(-ln 2) + (ln 3/4)(-ln 2) = ln 2 * ln 8/3 = 0.6799;
    total (lambda 0.5) = 0.6865.
    """
    if retriever_scores.shape != ranker_scores.shape or retriever_scores.ndim != 2:
        raise ValueError(f"expected two (B, G) tensors, got {tuple(retriever_scores.shape)} and "
                         f"{tuple(ranker_scores.shape)}")
    if adv_reduction not in ("sum", "mean"):
        raise ValueError(f"adv_reduction must be sum or mean, got {adv_reduction!r}")
    log_p = F.log_softmax(retriever_scores, dim=1)  # (B, G)
    ranker_scores = ranker_scores.detach().to(log_p.dtype)
    target = F.softmax(ranker_scores / ranker_temperature, dim=1)  # (B, G)
    reward = adversarial_reward(ranker_scores)  # (B, G), all <= 0
    distill = -(target * log_p).sum(dim=1).mean()
    adv_per_query = (reward * log_p).sum(dim=1)  # (B,)
    adv = adv_per_query.sum() if adv_reduction == "sum" else adv_per_query.mean()
    return adv_lambda * adv + (1.0 - adv_lambda) * distill, distill, adv
