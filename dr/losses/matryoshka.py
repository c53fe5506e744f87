"""Matryoshka representation learning (Kusupati et al., NeurIPS 2022; sentence-transformers'
MatryoshkaLoss): the same loss applied to the first d dimensions of the embeddings for several d, so that a
prefix of the vector is itself a usable embedding and an index can be built at a smaller dimension.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def truncate(emb: torch.Tensor, dim: int, normalize: bool) -> torch.Tensor:
    """The first `dim` columns of (N, H) `emb`, L2-renormalized when `normalize` (a cosine model: the
    truncated prefix of a unit vector is shorter than 1).

    >>> truncate(torch.tensor([[0.6, 0.0, 0.8]]), 2, normalize=True)
    tensor([[1., 0.]])
    """
    if not 0 < dim <= emb.shape[-1]:
        raise ValueError(f"cannot truncate {emb.shape[-1]}-dimensional embeddings to {dim}")
    out = emb[..., :dim]
    return F.normalize(out, p=2, dim=-1) if normalize else out


def matryoshka_loss(q: torch.Tensor, p: torch.Tensor, dims: Sequence[int], weights: Sequence[float],
                    normalize: bool, loss_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """sum_i weights[i] * loss_at(truncate(q, dims[i]), truncate(p, dims[i])).

    Only the listed dimensions contribute (list the full one to keep it). Hand-worked, dot product,
    one query q = [1, 2] against passages p = [[1, 0], [0, 1]], positive first, cross-entropy:
    at 2 dims the scores are [1, 2], loss log(1 + e^(2-1)) = log(1 + e) = 1.3133; at 1 dim [1, 0], loss
    log(1 + e^-1) = 0.3133; with weights [1, 0.5] the total is 1.3133 + 0.1566 = 1.4699.

    >>> ce = lambda a, b: F.cross_entropy(a @ b.T, torch.tensor([0]))
    >>> q, p = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> round(float(matryoshka_loss(q, p, [2, 1], [1.0, 0.5], False, ce)), 4)
    1.4699
    """
    if len(dims) != len(weights) or not dims:
        raise ValueError(f"matryoshka: {len(dims)} dims but {len(weights)} weights")
    total = q.new_zeros(())
    for dim, weight in zip(dims, weights):
        total = total + weight * loss_at(truncate(q, dim, normalize), truncate(p, dim, normalize))
    return total
