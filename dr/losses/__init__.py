"""Losses: pure functions of score tensors (no models, no torch.distributed)."""
from dr.losses.contrastive import (metric_weighted_pairwise, own_group_mask, pairwise_hinge, ranknet,
                                   softmax_cross_entropy)

__all__ = ["metric_weighted_pairwise", "own_group_mask", "pairwise_hinge", "ranknet", "softmax_cross_entropy"]
