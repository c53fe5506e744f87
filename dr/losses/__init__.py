"""Losses: pure functions of score tensors (no models, no torch.distributed)."""
from dr.losses.contrastive import pairwise_hinge, ranknet, softmax_cross_entropy

__all__ = ["pairwise_hinge", "ranknet", "softmax_cross_entropy"]
