"""The contrastive objective: the one object that knows both the encoder and the loss.

Cross-device negatives (DPR/Tevatron style): query and passage embeddings are gathered from every
process; the local shard is put back in place so it keeps its gradient, and the loss is taken over all
W*B queries and multiplied by W. Summed over processes (DDP averages gradients, dividing by W) every
(query, passage) term then contributes exactly once, so gradients equal those of one process holding the
whole global batch. Each query sees W*B*(1+N) - 1 negatives: the other W*B - 1 positives plus all
W*B*N hard negatives (B queries per process, N hard negatives per query, W processes).

With a cross-batch memory (`objective.memory_size`, dr.objectives.memory) each query also sees the
passages of recent steps as negatives, scored without gradient; a memory entry that is the query's own
positive (the same passage id) is masked. The memory is pushed the global batch's passages after the loss.

With `loss.matryoshka_dims` the loss is the weighted sum of the same loss over embedding prefixes
(dr.losses.matryoshka; renormalized for a cosine model), the memory's entries cut to the same prefix; the
logged train_acc is the full embeddings'.
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
from dr.losses.matryoshka import matryoshka_loss, truncate
from dr.losses.registry import LossConfig
from dr.models.dual_encoder import DualEncoder
from dr.objectives.base import ConfigError, ObjectiveConfig, Parts, TextObjective
from dr.objectives.memory import CrossBatchMemory, passage_keys


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

    def __init__(self, encoder: DualEncoder, loss: LossConfig, cross_device: bool = True, corpus=None,
                 memory: CrossBatchMemory | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.loss = loss
        self.cross_device = cross_device
        self.corpus = corpus
        self.memory = memory
        self._batch_pids: list[str] | None = None  # the passage ids of the last `batch`, for the memory's keys

    def batch(self, groups) -> dict:
        if self.memory is not None:
            self._batch_pids = [pid for g in groups for pid in g.passage_ids]
        return super().batch(groups)

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
        keys = self._local_keys(p) if self.memory is not None else None
        if world_size > 1:
            q, p = gather_with_grad(q), gather_with_grad(p)  # (W*B, H), (W*B*G, H)
            keys = gather_with_grad(keys) if keys is not None else None
        scores = self.encoder.score(q, p)  # (W*B, W*B*G)
        targets = torch.arange(q.shape[0], device=q.device) * group  # positive of query i is column i*G
        exclude, logs = None, {}
        if self.memory is not None:
            scores, exclude, logs["memory_negatives"] = self._with_memory(q, scores, keys[targets])
        if self.loss.matryoshka_dims:
            normalize = self.encoder.score_kind == "cosine"

            def loss_at(q_d: torch.Tensor, p_d: torch.Tensor) -> torch.Tensor:
                s_d = self.encoder.score(q_d, p_d)
                if self.memory is not None:
                    s_d, excl, _ = self._with_memory(q_d, s_d, keys[targets], lambda e: truncate(e, q_d.shape[1],
                                                                                              normalize))
                    return self.loss(s_d, targets, group, exclude=excl)
                return self.loss(s_d, targets, group)

            loss = matryoshka_loss(q, p, self.loss.matryoshka_dims, self.loss.matryoshka_weights, normalize, loss_at)
        else:
            loss = self.loss(scores, targets, group, exclude=exclude)
        with torch.no_grad():
            acc = (scores.argmax(dim=1) == targets).float().mean()
        logs = {"loss": float(loss.detach()), "train_acc": float(acc), **logs}
        if self.memory is not None:
            self._push(p, keys, world_size)
        return loss * world_size, logs

    def _local_keys(self, p: torch.Tensor) -> torch.Tensor:
        if self._batch_pids is None or len(self._batch_pids) != p.shape[0]:
            raise RuntimeError("the cross-batch memory needs the passage ids of this batch: call batch() first")
        return passage_keys(self._batch_pids, p.device)

    def _with_memory(self, q: torch.Tensor, scores: torch.Tensor, positive_keys: torch.Tensor,
                     view=None) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """`scores` with a column per usable memory entry, and the mask of entries that are a query's own
        positive; (scores, None, 0) while the memory is empty. `view(emb)`: the memory's embeddings as `q`
        sees them (a Matryoshka prefix)."""
        emb, keys = self.memory.entries()
        if len(keys) == 0:
            return scores, None, 0.0
        if view is not None:
            emb = view(emb)
        mem_scores = self.encoder.score(q, emb.to(q.dtype)).to(scores.dtype)  # (B, M), no gradient to the memory
        own = keys[None, :] == positive_keys[:, None]
        exclude = torch.cat([torch.zeros_like(scores, dtype=torch.bool), own], dim=1)
        return torch.cat([scores, mem_scores], dim=1), exclude, float(len(keys))

    def _push(self, p: torch.Tensor, keys: torch.Tensor, gathered_world: int) -> None:
        """Push the global batch's passages: already gathered under cross-device training, else gathered here
        (detached) so that every process holds the same memory."""
        p = p.detach()
        if gathered_world == 1 and world()[1] > 1:
            p, keys = gather_with_grad(p), gather_with_grad(keys)
        self.memory.push(p, keys)


@dataclass
class ContrastiveConfig(ObjectiveConfig):
    """`objective=contrastive` (the default): the loss of `loss=` (cross_entropy when null) over in-batch
    negatives and the hard negatives of `negatives=` (static) or `miner=` (mined by a dense model: ANCE,
    STAR). `ranker=` is read only as the miner's false-negative teacher (`miner.fn_teacher=ranker`).
    `sampler=ngame` / `sampler=curriculum` (dr.data.groups.BatchingConfig): negative-aware batches, a
    curriculum over the negatives' ranks."""

    name: ClassVar[str] = "contrastive"
    uses: ClassVar[frozenset[str]] = frozenset({"loss", "negatives", "miner", "ranker", "sampler"})
    grad_cache: ClassVar[bool] = True
    cross_device: ClassVar[bool] = True
    memory_size: int = 0  # cross-batch memory (XBM): passage embeddings of recent steps as extra negatives; 0: off
    memory_max_age: int = 0  # use only the memory entries of the last this many micro-batches; 0: no limit

    def check(self, cfg: DictConfig) -> None:
        if cfg.get("sampler") is not None and not str(cfg.sampler.get("_target_", "")).endswith("BatchingConfig"):
            raise ConfigError("objective=contrastive takes sampler=ngame or sampler=curriculum (a BatchingConfig); "
                              "sampler=tas_balanced draws teacher pairs for objective=distill")
        if self.memory_size < 0 or self.memory_max_age < 0:
            raise ConfigError("objective.memory_size and objective.memory_max_age must be >= 0")
        if self.memory_size and cfg.get("loss") is not None and not cfg.loss.get("in_batch", True):
            raise ConfigError("objective.memory_size adds negatives from other steps, but loss.in_batch=false "
                              "limits each query to its own group: use one or the other")
        if cfg.get("loss") is not None:
            instantiate(cfg.loss, _convert_="all")  # a loss name that is not registered fails here
        if cfg.get("negatives") is not None and cfg.get("miner") is not None:
            raise ConfigError("choose one source of hard negatives: negatives=... or miner=..., not both")
        miner = cfg.get("miner")
        judge = miner is not None and (miner.get("fn_ranker_threshold") is not None
                                       or miner.get("fn_teacher") == "ranker")
        if cfg.get("ranker") is not None and not judge:
            raise ConfigError("objective=contrastive reads ranker=... only as the miner's false-negative teacher "
                              "(miner.fn_teacher=ranker): set ranker=null, or objective=ranker to train it")
        if judge and cfg.get("ranker") is None:
            raise ConfigError("miner.fn_teacher=ranker (or fn_ranker_threshold) judges candidates with a "
                              "cross-encoder: choose the cross-encoder with ranker=...")

    def build(self, encoder: DualEncoder, parts: Parts) -> ContrastiveObjective:
        loss = instantiate(parts.cfg.loss, _convert_="all") if parts.cfg.get("loss") is not None else LossConfig()
        cross_device = True if parts.trainer.cross_device is None else parts.trainer.cross_device
        memory = CrossBatchMemory(self.memory_size, encoder.dim, self.memory_max_age) if self.memory_size else None
        if loss.matryoshka_dims and max(loss.matryoshka_dims) > encoder.dim:
            raise ConfigError(f"loss.matryoshka_dims {loss.matryoshka_dims}: the encoder's embeddings have "
                              f"{encoder.dim} dimensions")
        return ContrastiveObjective(encoder, loss, cross_device=cross_device, corpus=parts.train_set.corpus,
                                    memory=memory)
