"""The objective interface: what the trainer knows of a training method, and how a method is chosen.

A method is two classes in one module of this package:

- its config (the `objective=NAME` group's `_target_`), an `ObjectiveConfig`: it names the optional config
  groups it uses and requires, checks its own combination of settings in `validate(cfg)` (pure: it reads
  the composed config and loads nothing), and builds its objective from built components (`build`);
- its objective, an `Objective` (an `nn.Module`): `batch(groups) -> inputs` turns the schedule's groups
  into tensors and texts, `forward(**inputs) -> (loss, logs)` computes the loss. The trainer calls
  exactly these two, through DDP; an objective that exposes `embed` and `loss_from_embeddings` can also be
  stepped by GradCache (`trainer.grad_cache_chunk`).

The defaults below (parameter groups, evaluation retriever, batch schedule, callbacks) are what most
methods want; a method overrides the ones it changes.
"""
from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from dr.data.groups import BatchingConfig, Group, GroupSchedule
from dr.data.sources import RetrievalSet
from dr.dist import all_gather_object
from dr.index import kmeans_assign

logger = logging.getLogger(__name__)

# The optional config groups of dr.train; each method says which of them it reads.
OPTIONAL_GROUPS = ("loss", "negatives", "miner", "ranker", "teacher", "sampler", "quantizer")
# What an objective can ask of the trainer: the passages' texts (encoded in the step) or the passages'
# embeddings (encoded once, from the cache when the model was encoded before).
NEEDS = frozenset({"passage_texts", "passage_embeddings"})


class ConfigError(ValueError):
    """A combination of settings that the chosen method cannot run or would ignore."""


@dataclass
class Parts:
    """What dr.train has built when it builds an objective: the composed config and the loaded components."""

    cfg: DictConfig
    trainer: Any  # TrainerConfig
    train_set: RetrievalSet
    train_qids: list[str]
    cache: Any  # EmbeddingCache | None
    accelerator: Any  # accelerate.Accelerator
    out_dir: Path

    @property
    def positives(self) -> dict[str, list[str]]:
        return {q: self.train_set.positives(q) for q in self.train_qids}


class Objective(nn.Module):
    """Base of every objective. `encoder` is the model evaluated and exported (a DualEncoder, or the
    cross-encoder of objective=ranker). `needs` declares what the objective takes from the trainer."""

    needs: ClassVar[frozenset[str]] = frozenset({"passage_texts"})
    encoder: nn.Module

    def batch(self, groups: Sequence[Group]) -> dict:
        """Abstract: the keyword inputs of `forward` for these groups (every objective defines it)."""
        raise NotImplementedError

    def param_groups(self, weight_decay: float) -> list[dict]:
        return param_groups(self, weight_decay)

    def eval_retriever(self, dense, cache):
        """The retriever that evaluates this model during training: `dense` is the configured dense
        retriever's factory (retriever=dense), `cache` the embedding cache."""
        return dense(encoder=self.encoder, cache=cache)

    def schedule(self, parts: Parts, negatives: dict[str, list[str]] | None, global_batch: int, mined: bool):
        """The batch schedule: groups of (query, positive, negatives) as a pure function of (seed, step).
        With `sampler=` (a `BatchingConfig`): negative-aware batches over query clusters, and a curriculum
        window over each query's negatives. With a miner and `refresh_clusters` the clusters come from the
        miner's first refresh (before step 0) and every later one (dr.trainer.callbacks.MinerCallback)."""
        t = parts.trainer
        # a sampler other than a BatchingConfig is refused by the method's check (ContrastiveConfig.check)
        sampler = parts.cfg.get("sampler")
        batching = instantiate(sampler, _convert_="all") if sampler is not None else BatchingConfig()
        clusters, k = None, 0
        if batching.clusters:
            k = batching.n_clusters(len(parts.train_qids), global_batch)
            if not (mined and batching.refresh_clusters):
                clusters = cluster_queries(self.encoder, parts.train_set, parts.train_qids, k, t.seed,
                                           batching.cluster_model)
                logger.info("negative-aware batches: %d training queries in %d clusters (%d non-empty)",
                            len(parts.train_qids), k, len(np.unique(clusters)))
        window = (batching.window_start, batching.window_end) if batching.window_start is not None else None
        return GroupSchedule(parts.train_set, parts.train_qids, negatives, t.negatives_per_query, global_batch,
                             t.seed, mined=mined, clusters=clusters, window=window,
                             total_steps=t.max_steps * t.grad_accum,
                             recluster_k=k if mined and batching.refresh_clusters else 0,
                             spherical=getattr(self.encoder, "score_kind", "dot") == "cosine")

    def callbacks(self) -> list:
        """Callbacks the method adds to the trainer's (before logging, evaluation and checkpoints)."""
        return []

    def export_files(self, directory: Path) -> None:
        """Called inside the atomic export of the trained model: the method's own files (JPQ's index, AR2's
        ranker)."""


def cluster_queries(encoder, train_set: RetrievalSet, qids: Sequence[str], k: int, seed: int,
                    model: str | None = None) -> np.ndarray:
    """(len(qids),) k-means cluster of each training query, on `encoder`'s query embeddings (or those of the
    model `model` names); spherical k-means for cosine scores. Rank 0's labels on every process."""
    if model:
        from dr.models.dual_encoder import DualEncoder

        encoder = DualEncoder(encoder.config.with_weights(model))
    emb = encoder.encode_queries([train_set.queries[q] for q in qids], desc="cluster queries")
    labels = kmeans_assign(emb, k, seed=seed, spherical=encoder.score_kind == "cosine")
    return all_gather_object(labels)[0]


class TextObjective(Objective):
    """An objective over the texts of each group's query and passages; `corpus` gives the passage texts."""

    corpus: Any  # CorpusStore

    def batch(self, groups: Sequence[Group]) -> dict:
        pids = [pid for g in groups for pid in g.passage_ids]
        return {"queries": [g.query for g in groups], "passages": self.corpus.texts(self.corpus.rows_of(pids))}


@dataclass
class ObjectiveConfig:
    """Base of the `objective=NAME` configs. Subclasses set the class variables and `build`."""

    name: ClassVar[str] = ""
    uses: ClassVar[frozenset[str]] = frozenset()  # optional groups the method reads
    requires: ClassVar[dict[str, str]] = {}  # group -> what to choose, for the error message
    grad_cache: ClassVar[bool] = False  # the objective exposes embed and loss_from_embeddings
    cross_device: ClassVar[bool] = False  # the objective gathers embeddings across processes
    two_models: ClassVar[bool] = False  # one of two models is idle in a step (DDP's find_unused_parameters)

    def validate(self, cfg: DictConfig) -> None:
        """Raise ConfigError for a group the method would ignore or lacks, or a trainer setting it cannot
        honour; then the method's own checks (`check`). Reads `cfg` only."""
        for group in OPTIONAL_GROUPS:
            if cfg.get(group) is not None and group not in self.uses:
                raise ConfigError(f"objective={self.name} does not use {group}=...: set {group}=null"
                                  f"{self._hint(group)}")
        for group, hint in self.requires.items():
            if cfg.get(group) is None:
                raise ConfigError(f"objective={self.name} needs {group}=...: {hint}")
        trainer = cfg.trainer
        if trainer.get("grad_cache_chunk") and not self.grad_cache:
            raise ConfigError(f"objective={self.name} cannot be stepped by GradCache (it has no embed / "
                              f"loss_from_embeddings seam): set trainer.grad_cache_chunk=0")
        if trainer.get("cross_device") and not self.cross_device:
            raise ConfigError(f"objective={self.name} computes its loss on each process's own batch: "
                              f"trainer.cross_device=true would be ignored; leave it null")
        self.check(cfg)

    def check(self, cfg: DictConfig) -> None:
        """The method's own cross-group checks (pure)."""

    @staticmethod
    def _hint(group: str) -> str:
        return {"teacher": " (distillation from a teacher is objective=distill)",
                "quantizer": " (JPQ is objective=jpq)"}.get(group, "")

    def encoder_config(self, cfg: DictConfig):
        """The config of the model this method trains (the dual encoder by default)."""
        return instantiate(cfg.model, _convert_="all")

    def make_encoder(self, encoder_cfg) -> nn.Module:
        from dr.models.dual_encoder import DualEncoder

        return DualEncoder(encoder_cfg)

    def find_unused_parameters(self, encoder_cfg) -> bool:
        """DDP: true when some trained parameters may get no gradient in a step."""
        return self.two_models or not getattr(encoder_cfg, "shared", True)

    def build(self, encoder: nn.Module, parts: Parts) -> Objective:
        """Abstract: the objective over the built encoder and parts (every method's config defines it)."""
        raise NotImplementedError


def batch_draw(groups: Sequence[Group], n: int, k: int, seed: int, stream: int) -> list[int]:
    """`min(k, n)` sorted positions of `n` items, drawn without replacement and seeded by (seed, the batch's
    query ids, `stream`): a pure function of the batch, so a rerun or a resumed run draws the same ones
    (the anchor queries of objective=distill, the query log of objective=query_distill)."""
    key = zlib.crc32("\t".join(g.qid for g in groups).encode())
    rng = np.random.default_rng([seed, key, stream])
    return sorted(rng.choice(n, size=min(k, n), replace=False).tolist())


def check_positive(config, *names: str, nullable: tuple[str, ...] = ()) -> None:
    """`objective.NAME must be > 0` for each of `names` (those in `nullable` may also be None)."""
    for name in names:
        value = getattr(config, name)
        if value is None and name in nullable:
            continue
        if value is None or not value > 0:
            raise ValueError(f"objective.{name} must be > 0{' or null' if name in nullable else ''}, got {value}")


def shared_tower_check(cfg: DictConfig, name: str, why: str) -> None:
    if cfg.model.get("shared", True):
        raise ConfigError(f"objective={name} {why}: set model.shared=false")


def param_groups(model: nn.Module, weight_decay: float, special: dict[int, dict] | None = None) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (BERT recipe); shared towers counted once.
    `special`: {id(parameter): group options} for parameters with their own group (a new head's learning
    rate, JPQ's centroids); those groups follow the two plain ones, in order of first appearance."""
    special = special or {}
    decay, no_decay, seen = [], [], set()
    extra: dict[tuple, list] = {}
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in special:
            extra.setdefault(tuple(sorted(special[id(p)].items())), []).append(p)
        else:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return groups + [{"params": ps, **dict(key)} for key, ps in extra.items()]

