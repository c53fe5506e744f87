"""The contrastive objective: the one object that knows both the encoder and the loss.

Cross-device negatives (DPR/Tevatron style): query and passage embeddings are gathered from every
process; the local shard is put back in place so it keeps its gradient, and the loss is taken over all
W*B queries and multiplied by W. Summed over processes (DDP averages gradients, dividing by W) every
(query, passage) term then contributes exactly once, so gradients equal those of one process holding the
whole global batch. Each query sees W*B*(1+N) - 1 negatives: the other W*B - 1 positives plus all
W*B*N hard negatives (B queries per process, N hard negatives per query, W processes).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

from dr.dist import world
from dr.losses.registry import LossConfig
from dr.models.dual_encoder import DualEncoder


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """(n, H) per process -> (W*n, H); only this process's rows carry gradient. Needs equal n everywhere."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.detach().contiguous())
    parts[dist.get_rank()] = local
    return torch.cat(parts, dim=0)


class ContrastiveObjective(nn.Module):
    """`forward(groups)` -> (loss, logs). With `cross_device=False` each process uses only its own batch."""

    def __init__(self, encoder: DualEncoder, loss: LossConfig, cross_device: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.loss = loss
        self.cross_device = cross_device

    def forward(
        self, queries: Sequence[str] | None = None, passages: Sequence[str] | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """Both given: `(loss, logs)` for B queries and their B*G passages (group-major, positive first).
        One given: its embeddings, so that GradCache's chunked re-forward also runs through DDP."""
        if queries is not None and passages is not None:
            return self.loss_from_embeddings(self.embed("query", queries), self.embed("passage", passages))
        if queries is not None:
            return self.embed("query", queries)
        if passages is not None:
            return self.embed("passage", passages)
        raise ValueError("ContrastiveObjective needs queries, passages or both")

    def embed(self, tower: str, texts: Sequence[str]) -> torch.Tensor:
        return self.encoder.embed(tower, self.encoder.tokenize(tower, texts))

    def loss_from_embeddings(self, q: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """q (B, H) local queries; p (B*G, H) local passages, G per query, positive first in each group."""
        group = p.shape[0] // q.shape[0]
        world_size = world()[1] if self.cross_device else 1
        if world_size > 1:
            q, p = gather_with_grad(q), gather_with_grad(p)  # (W*B, H), (W*B*G, H)
        scores = self.encoder.score(q, p)  # (W*B, W*B*G)
        targets = torch.arange(q.shape[0], device=q.device) * group  # positive of query i is column i*G
        loss = self.loss(scores, targets, group)
        with torch.no_grad():
            acc = (scores.argmax(dim=1) == targets).float().mean()
        logs = {"loss": float(loss.detach()), "train_acc": float(acc)}
        return loss * world_size, logs
