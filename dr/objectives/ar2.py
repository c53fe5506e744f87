"""AR2 (Zhang et al., ICLR 2022, "Adversarial Retriever-Ranker for Dense Text Retrieval"): a dual-encoder
retriever and a cross-encoder ranker trained in alternating phases on the same candidates.

Each query's group is its positive followed by negatives drawn from the retriever's top-k over a
periodically refreshed index (the miner). In a ranker phase only the cross-encoder learns (listwise
cross-entropy); in a retriever phase only the dual encoder learns, against the ranker's logits of the
same pairs computed without gradient (`dr.losses.adversarial.ar2_retriever_loss`). One AR2 iteration is
a ranker phase then a retriever phase; the index is refreshed with the new retriever between iterations.

Authors' code (microsoft/AR2): AR2/wiki/co_training_wiki_train.py starts every iteration with the
ranker (`train_flag = 1`), trains it while `global_step % iteration_step < iteration_reranker_step`, then
the retriever until `global_step % iteration_step == 0`, where the shell loop in AR2/wiki/README.md
re-encodes the corpus with the new retriever and rebuilds the top-100 candidates
(co_training_wiki_generate.py, co_training_generate_new_train_wiki.py: `search(..., 100)`; hits become
positives, the rest hard negatives of which `--number_neg=15` are drawn). README values:
`Iteration_step=2000`, `Iteration_reranker_step=500` (500 ranker + 1500 retriever steps),
`MAX_STEPS=32000`, `--learning_rate=1e-5` (retriever), `--reranker_learning_rate=1e-6`,
`--per_gpu_train_batch_size=8` on 8 GPUs, `--max_seq_length=128`, `--adv_lambda 0.5`,
`--temperature_normal=1`. Their check `0 < step % it < it_ranker` leaves step `it_ranker` itself to the
ranker (501 ranker steps per iteration); here a phase has exactly the configured number of steps.
They keep two optimizers with their own linear schedules (10% warmup each); here one optimizer holds
both models (the ranker in its own learning-rate group) and a parameter whose gradient stays None in
the other model's phase is not touched by AdamW.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from dr.losses.adversarial import Reduction, ar2_retriever_loss
from dr.losses.contrastive import listwise_cross_entropy
from dr.models.cross_encoder import CrossEncoder
from dr.models.dual_encoder import DualEncoder
from dr.models.export import export_ranker
from dr.objectives.base import ConfigError, ObjectiveConfig, Parts, TextObjective, check_positive, param_groups
from dr.objectives.ranker import group_logits
from dr.trainer.callbacks import Callback

Phase = Literal["ranker", "retriever"]
RANKER_EXPORT = "ranker"  # the ranker's Hugging Face export, inside the retriever's export directory


def phase(step: int, phase_steps: int, retriever_steps: int | None = None) -> Phase:
    """Which model trains at global step `step` (0-based): AR2 iterations of `phase_steps` ranker steps
    followed by `retriever_steps` retriever steps (default: as many). The ranker goes first, as in the
    authors' co-training script."""
    retriever_steps = phase_steps if retriever_steps is None else retriever_steps
    if phase_steps <= 0 or retriever_steps <= 0:
        raise ValueError(f"AR2 phases need > 0 steps, got {phase_steps} and {retriever_steps}")
    return "ranker" if step % (phase_steps + retriever_steps) < phase_steps else "retriever"


@dataclass
class AR2Config(ObjectiveConfig):
    """`objective=ar2`: the retriever (model=...) and the cross-encoder of `ranker=` in turns, on the
    candidates of `miner=dynamic`. `phase_steps`: steps of each ranker phase; `retriever_phase_steps`: steps of each retriever phase
    (null: `phase_steps`); an iteration is both, and `miner.refresh_every` must be a multiple of it.
    `adv_lambda`: weight of the adversarial term (1 - adv_lambda weighs the distillation term);
    `adv_reduction`: `sum` over the batch's queries as the authors do, or `mean`.
    `ranker_temperature`: divides the ranker's logits in the distillation target (retriever scores use
    the dual encoder's own temperature). `ranker_lr`: the ranker's learning rate (null: trainer.lr)."""

    name: ClassVar[str] = "ar2"
    uses: ClassVar[frozenset[str]] = frozenset({"ranker", "miner"})
    requires: ClassVar[dict[str, str]] = {
        "ranker": "AR2 trains a cross-encoder beside the retriever: choose it with ranker=... "
                  "(e.g. ranker=scifact_teacher or ranker=minilm)",
        "miner": "AR2 takes its candidates from the retriever's refreshed index: set miner=dynamic"}
    two_models: ClassVar[bool] = True  # one of the two models is idle in each step

    phase_steps: int = 5
    retriever_phase_steps: int | None = None
    adv_lambda: float = 0.5
    adv_reduction: Reduction = "sum"
    ranker_temperature: float = 1.0
    ranker_lr: float | None = None

    def __post_init__(self) -> None:
        check_positive(self, "phase_steps", "retriever_phase_steps", "ranker_temperature", "ranker_lr",
                       nullable=("retriever_phase_steps", "ranker_lr"))
        if not 0.0 <= self.adv_lambda <= 1.0:
            raise ValueError(f"objective.adv_lambda must be in [0, 1], got {self.adv_lambda}")
        if self.adv_reduction not in ("sum", "mean"):
            raise ValueError(f"objective.adv_reduction must be sum or mean, got {self.adv_reduction!r}")

    @property
    def retriever_steps(self) -> int:
        return self.phase_steps if self.retriever_phase_steps is None else self.retriever_phase_steps

    @property
    def iteration_steps(self) -> int:
        return self.phase_steps + self.retriever_steps

    def phase(self, step: int) -> Phase:
        return phase(step, self.phase_steps, self.retriever_steps)

    def check(self, cfg: DictConfig) -> None:
        """A miner refreshing between AR2 iterations with the retriever being trained, and groups to rank."""
        if cfg.miner.get("model"):
            raise ConfigError("objective=ar2 mines with the retriever it trains: set miner.model=null")
        if cfg.miner.get("fn_ranker_threshold") is not None or cfg.miner.get("fn_teacher") == "ranker":
            raise ConfigError("objective=ar2 trains its ranker: set miner.fn_ranker_threshold=null and "
                              "miner.fn_teacher to null or fusion")
        self.check_refresh(int(cfg.miner.refresh_every))
        if cfg.trainer.negatives_per_query < 1:
            raise ConfigError("objective=ar2 ranks each positive among retrieved negatives: set "
                              "trainer.negatives_per_query >= 1")

    def build(self, encoder: DualEncoder, parts: Parts) -> AR2Objective:
        ranker = CrossEncoder(instantiate(parts.cfg.ranker, _convert_="all"))
        if parts.trainer.gradient_checkpointing:
            ranker.gradient_checkpointing_enable()
        return AR2Objective(encoder, ranker, self, parts.train_set.corpus)

    def check_refresh(self, refresh_every: int) -> None:
        """The index must be rebuilt between iterations (after a retriever phase, before a ranker phase)."""
        if refresh_every <= 0 or refresh_every % self.iteration_steps:
            raise ConfigError(
                f"objective=ar2 refreshes the index between AR2 iterations: miner.refresh_every={refresh_every} "
                f"must be a positive multiple of objective.phase_steps + objective.retriever_phase_steps = "
                f"{self.phase_steps} + {self.retriever_steps} = {self.iteration_steps}")


class AR2Objective(TextObjective):
    """`forward(queries, passages) -> (loss, logs)` for the phase in `active` (set before every step by
    `AR2PhaseCallback`). `encoder` is the retriever, so the dense evaluation, the miner and the export
    find the dual encoder there; the ranker is exported beside it (`export_files`)."""

    def __init__(self, retriever: DualEncoder, ranker: CrossEncoder, config: AR2Config, corpus=None) -> None:
        super().__init__()
        self.retriever = retriever
        self.ranker = ranker
        self.config = config
        self.corpus = corpus
        self.active: Phase = config.phase(0)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """The retriever's groups at trainer.lr and the ranker's at objective.ranker_lr (AR2 authors: 1e-5, 1e-6)."""
        ranker = param_groups(self.ranker, weight_decay)
        if self.config.ranker_lr is not None:
            ranker = [{**g, "lr": self.config.ranker_lr} for g in ranker]
        return param_groups(self.retriever, weight_decay) + ranker

    def callbacks(self) -> list:
        return [AR2PhaseCallback(self.config)]

    @property
    def encoder(self) -> DualEncoder:
        return self.retriever

    def forward(self, queries: Sequence[str], passages: Sequence[str]) -> tuple[torch.Tensor, dict]:
        """B queries and their B*G passages, group-major with the positive first in each group."""
        if not queries or len(passages) % len(queries) or len(passages) == len(queries):
            raise ValueError(f"{len(passages)} passages do not split into groups of >= 2 for {len(queries)} "
                             "queries: AR2 needs trainer.negatives_per_query >= 1")
        group = len(passages) // len(queries)
        if self.active == "ranker":
            logits = self.ranker_logits(queries, passages, group)  # (B, G)
            loss = listwise_cross_entropy(logits)
            logs = {"loss_ranker": float(loss.detach())}
        else:
            scores = self.retriever_scores(queries, passages, group)  # (B, G)
            with torch.no_grad():
                was_training = self.ranker.training
                self.ranker.eval()  # the ranker judges without dropout, as the authors' reranker_model.eval()
                logits = self.ranker_logits(queries, passages, group)
                self.ranker.train(was_training)
            loss, distill, adv = ar2_retriever_loss(scores, logits, self.config.adv_lambda,
                                                    self.config.ranker_temperature, self.config.adv_reduction)
            with torch.no_grad():
                retriever_acc = (scores.argmax(dim=1) == 0).float().mean()
            logs = {"loss_distill": float(distill.detach()), "loss_adv": float(adv.detach()),
                    "retriever_acc": float(retriever_acc)}
        with torch.no_grad():
            ranker_acc = (logits.argmax(dim=1) == 0).float().mean()
        logs.update({"loss": float(loss.detach()), "ranker_acc": float(ranker_acc),
                     "ranker_phase": float(self.active == "ranker")})
        return loss, logs

    def ranker_logits(self, queries: Sequence[str], passages: Sequence[str], group: int) -> torch.Tensor:
        return group_logits(self.ranker, queries, passages, group)  # (B, G)

    def retriever_scores(self, queries: Sequence[str], passages: Sequence[str], group: int) -> torch.Tensor:
        """Each query against its own group only (the authors' einsum "bh,bdh->bd"), over the temperature."""
        enc = self.retriever
        q = enc.embed("query", enc.tokenize("query", queries))  # (B, H)
        p = enc.embed("passage", enc.tokenize("passage", passages)).view(len(queries), group, -1)  # (B, G, H)
        return torch.einsum("bh,bgh->bg", q, p) / enc.config.temperature

    def export_files(self, export_dir: Path) -> None:
        """Called inside the retriever's atomic export: the ranker in Hugging Face layout under ranker/."""
        export_ranker(self.ranker, Path(export_dir) / RANKER_EXPORT)


@dataclass
class AR2PhaseCallback(Callback):
    """Switches the objective's active model before every step, from the global step alone (so a resumed
    run continues the same schedule)."""

    config: AR2Config

    def on_step_begin(self, trainer) -> None:
        trainer.objective.active = self.config.phase(trainer.state.step)
