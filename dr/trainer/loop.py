"""The training loop on Accelerate: one CPU, one GPU, many GPUs or nodes run the same code.

Periodic work (evaluation, checkpoints, logging) lives in callbacks keyed on the global step.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from dr.data.groups import Group, GroupSchedule
from dr.trainer.checkpoint import TrainState
from dr.trainer.config import TrainerConfig
from dr.trainer.grad_cache import grad_cache_backward
from dr.trainer.objective import ContrastiveObjective

logger = logging.getLogger(__name__)


class Callback(Protocol):
    """Also optional: `on_step_begin(trainer)` (before a step) and `on_refresh(trainer, record)`."""

    def on_train_begin(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer, logs: dict) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


@dataclass
class Trainer:
    config: TrainerConfig
    accelerator: Accelerator
    model: torch.nn.Module  # the prepared ContrastiveObjective (DDP-wrapped when distributed)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    schedule: GroupSchedule
    callbacks: Sequence[Callback] = ()
    state: TrainState = field(default_factory=TrainState)
    negatives: dict[str, list[str]] | None = None
    should_stop: bool = False
    refreshes: list[dict] = field(default_factory=list)  # miner refresh costs, appended by MinerCallback
    pending_logs: dict = field(default_factory=dict)  # callbacks' additions to the next step's logs
    loop_s: float = 0.0  # seconds in the step loop (training steps and refreshes, not the final evaluation)

    @property
    def objective(self) -> ContrastiveObjective:
        return self.accelerator.unwrap_model(self.model)

    def local_groups(self, micro_step: int) -> list[Group]:
        """This process's slice of the global micro-batch `micro_step`."""
        groups = self.schedule.batch(micro_step)
        b, rank = self.config.batch_size, self.accelerator.process_index
        return groups[rank * b : (rank + 1) * b]

    def passage_texts(self, groups: list[Group]) -> list[str]:
        corpus = self.schedule.train_set.corpus
        return corpus.texts(corpus.rows_of([pid for g in groups for pid in g.passage_ids]))

    def train(self) -> TrainState:
        cfg = self.config
        for cb in self.callbacks:
            cb.on_train_begin(self)
        self.model.train()
        bar = tqdm(total=cfg.max_steps, initial=self.state.step, desc="train",
                   disable=not self.accelerator.is_main_process)
        loop_start = time.perf_counter()
        while self.state.step < cfg.max_steps and not self.should_stop:
            for cb in self.callbacks:
                if hasattr(cb, "on_step_begin"):  # e.g. a miner refresh due before this step
                    cb.on_step_begin(self)
            start = time.perf_counter()
            logs = self.training_step(self.state.step)
            logs.update(self.pending_logs)
            self.pending_logs = {}
            logs["queries_per_s"] = cfg.batch_size * cfg.grad_accum * self.accelerator.num_processes / (
                time.perf_counter() - start)
            self.state.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}", qps=f"{logs['queries_per_s']:.1f}")
            for cb in self.callbacks:
                cb.on_step_end(self, logs)
        bar.close()
        self.loop_s = time.perf_counter() - loop_start
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.state

    def training_step(self, step: int) -> dict:
        """One optimizer update over `grad_accum` micro-batches; returns averaged logs."""
        cfg, acc = self.config, self.accelerator
        totals: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            groups = self.local_groups(step * cfg.grad_accum + micro)
            sync = micro == cfg.grad_accum - 1
            with (nullcontext() if sync else acc.no_sync(self.model)), acc.autocast():
                if hasattr(self.objective, "inputs"):  # objectives that take no passage texts (ADORE)
                    loss, logs = self.model(**self.objective.inputs(groups))
                    acc.backward(loss / cfg.grad_accum)
                elif cfg.grad_cache_chunk:
                    queries, passages = [g.query for g in groups], self.passage_texts(groups)
                    loss, logs = grad_cache_backward(self.model, self.objective, acc, queries, passages,
                                                     cfg.grad_cache_chunk, scale=1.0 / cfg.grad_accum)
                else:
                    loss, logs = self.model([g.query for g in groups], self.passage_texts(groups))
                    acc.backward(loss / cfg.grad_accum)
            for k, v in logs.items():
                totals[k] = totals.get(k, 0.0) + v / cfg.grad_accum
        if cfg.max_grad_norm:
            totals["grad_norm"] = float(acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        totals["lr"] = self.scheduler.get_last_lr()[0]
        return totals
