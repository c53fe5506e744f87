"""Losses: pure functions of score tensors (no models, no torch.distributed)."""
from dr.losses.contrastive import (hard_negative_cross_entropy, listwise_cross_entropy, metric_weighted_pairwise, own_group_mask,
                                   pairwise_hinge, ranknet, softmax_cross_entropy)
from dr.losses.distill import inbatch_margin_mse, kl_distill, margin_mse, pairwise_margin_mse
from dr.losses.matryoshka import matryoshka_loss, truncate

__all__ = ["hard_negative_cross_entropy", "inbatch_margin_mse", "kl_distill", "listwise_cross_entropy", "margin_mse", "matryoshka_loss", "metric_weighted_pairwise", "own_group_mask",
           "pairwise_hinge", "pairwise_margin_mse", "ranknet", "softmax_cross_entropy", "truncate"]
