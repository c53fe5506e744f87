"""The training loop on Accelerate: one CPU, one GPU, many GPUs or nodes run the same code.

A step asks the objective (dr.objectives) for its inputs, `objective.batch(groups)`, and steps it on them
with one call: `plain_step` (forward through DDP, backward) or `GradCache` (trainer.grad_cache_chunk).
Periodic work (evaluation, checkpoints, logging, miner refreshes) lives in callbacks keyed on the global
step; the trainer dispatches their events (`dispatch`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from dr.data.groups import Group
from dr.trainer.callbacks import Callback
from dr.trainer.checkpoint import TrainState
from dr.trainer.config import TrainerConfig
from dr.trainer.grad_cache import GradCache, plain_step

logger = logging.getLogger(__name__)


@dataclass
class Trainer:
    """`model`: the prepared objective (dr.objectives.base.Objective; DDP-wrapped when distributed).
    `schedule`: any batch schedule with `batch(step) -> groups`, `train_set` and `qids` (GroupSchedule,
    TasSchedule)."""

    config: TrainerConfig
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    schedule: object
    callbacks: Sequence[Callback] = ()
    state: TrainState = field(default_factory=TrainState)
    negatives: dict[str, list[str]] | None = None
    should_stop: bool = False
    refreshes: list[dict] = field(default_factory=list)  # miner refresh costs, appended by MinerCallback
    pending_logs: dict = field(default_factory=dict)  # callbacks' additions to the next step's logs
    loop_s: float = 0.0  # seconds in the step loop (training steps and refreshes, not the final evaluation)
    step_fn: Callable | None = None  # plain_step or GradCache(trainer.grad_cache_chunk); set from the config

    def __post_init__(self) -> None:
        if self.step_fn is None:
            self.step_fn = GradCache(self.config.grad_cache_chunk) if self.config.grad_cache_chunk else plain_step

    @property
    def objective(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def dispatch(self, event: str, *args) -> None:
        """Call `event` (on_train_begin, on_step_begin, on_step_end, on_refresh, on_train_end) on every callback."""
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    def local_groups(self, micro_step: int) -> list[Group]:
        """This process's slice of the global micro-batch `micro_step`."""
        groups = self.schedule.batch(micro_step)
        b, rank = self.config.batch_size, self.accelerator.process_index
        return groups[rank * b : (rank + 1) * b]

    def train(self) -> TrainState:
        cfg = self.config
        self.dispatch("on_train_begin")
        self.model.train()
        bar = tqdm(total=cfg.max_steps, initial=self.state.step, desc="train",
                   disable=not self.accelerator.is_main_process)
        loop_start = time.perf_counter()
        while self.state.step < cfg.max_steps and not self.should_stop:
            self.dispatch("on_step_begin")  # e.g. a miner refresh due before this step
            start = time.perf_counter()
            logs = self.training_step(self.state.step)
            logs.update(self.pending_logs)
            self.pending_logs = {}
            logs["queries_per_s"] = cfg.batch_size * cfg.grad_accum * self.accelerator.num_processes / (
                time.perf_counter() - start)
            self.state.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}", qps=f"{logs['queries_per_s']:.1f}")
            self.dispatch("on_step_end", logs)
        bar.close()
        self.loop_s = time.perf_counter() - loop_start
        self.dispatch("on_train_end")
        return self.state

    def training_step(self, step: int) -> dict:
        """One optimizer update over `grad_accum` micro-batches; returns averaged logs."""
        cfg, acc = self.config, self.accelerator
        totals: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            groups = self.local_groups(step * cfg.grad_accum + micro)
            sync = micro == cfg.grad_accum - 1
            with (nullcontext() if sync else acc.no_sync(self.model)), acc.autocast():
                # inside autocast: a live in-batch teacher (objective=distill) scores at the step's precision
                inputs = self.objective.batch(groups)
                loss, logs = self.step_fn(self.model, self.objective, acc, inputs, cfg.grad_accum)
            for k, v in logs.items():
                totals[k] = totals.get(k, 0.0) + v / cfg.grad_accum
        if cfg.max_grad_norm:
            totals["grad_norm"] = float(acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        totals["lr"] = self.scheduler.get_last_lr()[0]
        return totals
