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
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.distributed as dist
from hydra.utils import instantiate
from omegaconf import DictConfig

from dr.dist import world
from dr.losses.registry import LossConfig
from dr.models.dual_encoder import DualEncoder
from dr.objectives.base import ConfigError, ObjectiveConfig, Parts, TextObjective


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """(n, H) per process -> (W*n, H); only this process's rows carry gradient. Needs equal n everywhere."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.detach().contiguous())
    parts[dist.get_rank()] = local
    return torch.cat(parts, dim=0)


class ContrastiveObjective(TextObjective):
    """`forward(queries, passages)` -> (loss, logs). With `cross_device=False` each process uses only its
    own batch. `corpus`: where `batch` finds the passages' texts (None: `batch` is not used)."""

    def __init__(self, encoder: DualEncoder, loss: LossConfig, cross_device: bool = True, corpus=None) -> None:
        super().__init__()
        self.encoder = encoder
        self.loss = loss
        self.cross_device = cross_device
        self.corpus = corpus

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


@dataclass
class ContrastiveConfig(ObjectiveConfig):
    """`objective=contrastive` (the default): the loss of `loss=` (cross_entropy when null) over in-batch
    negatives and the hard negatives of `negatives=` (static) or `miner=` (mined by a dense model: ANCE,
    STAR). `ranker=` is read only as the miner's false-negative filter (`miner.fn_ranker_threshold`)."""

    name: ClassVar[str] = "contrastive"
    uses: ClassVar[frozenset[str]] = frozenset({"loss", "negatives", "miner", "ranker"})
    grad_cache: ClassVar[bool] = True
    cross_device: ClassVar[bool] = True

    def check(self, cfg: DictConfig) -> None:
        if cfg.get("loss") is not None:
            instantiate(cfg.loss, _convert_="all")  # a loss name that is not registered fails here
        if cfg.get("negatives") is not None and cfg.get("miner") is not None:
            raise ConfigError("choose one source of hard negatives: negatives=... or miner=..., not both")
        threshold = cfg.miner.get("fn_ranker_threshold") if cfg.get("miner") is not None else None
        if cfg.get("ranker") is not None and threshold is None:
            raise ConfigError("objective=contrastive reads ranker=... only as the miner's false-negative filter "
                              "(miner.fn_ranker_threshold): set ranker=null, or objective=ranker to train it")
        if threshold is not None and cfg.get("ranker") is None:
            raise ConfigError("miner.fn_ranker_threshold drops candidates a cross-encoder scores above it: "
                              "choose the cross-encoder with ranker=...")

    def build(self, encoder: DualEncoder, parts: Parts) -> ContrastiveObjective:
        loss = instantiate(parts.cfg.loss, _convert_="all") if parts.cfg.get("loss") is not None else LossConfig()
        cross_device = True if parts.trainer.cross_device is None else parts.trainer.cross_device
        return ContrastiveObjective(encoder, loss, cross_device=cross_device, corpus=parts.train_set.corpus)
