"""Trainer options, validated when built so a bad value fails before any model is loaded."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainerConfig:
    """Steps count optimizer updates. `batch_size` is queries per process per micro-batch; the queries
    in one micro-batch (times processes, with cross_device) are each other's in-batch negatives."""

    max_steps: int = 100
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # auto: bf16 on native-bf16 hardware (dr.models.precision), else fp32
    gradient_checkpointing: bool = False
    grad_cache_chunk: int = 0
    cross_device: bool | None = None  # None: the objective's default (objective=contrastive: True)
    negatives_per_query: int = 0
    seed: int = 42
    log_every: int = 1
    eval_every: int = 0
    save_every: int = 0
    keep_checkpoints: int = 2
    zero_shot_eval: bool = False
    dev_queries: int = 100
    dev_corpus_size: int | None = 1000
    select_metric: str = "nDCG@10"
    tensorboard: bool = True

    def __post_init__(self) -> None:
        positive = ("max_steps", "batch_size", "grad_accum", "log_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"trainer.{name} must be > 0, got {getattr(self, name)}")
        non_negative = ("grad_cache_chunk", "negatives_per_query", "eval_every", "save_every", "dev_queries",
                        "weight_decay", "max_grad_norm")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"trainer.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"trainer.lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"trainer.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.mixed_precision not in ("auto", "no", "fp32", "bf16", "fp16"):
            raise ValueError(f"trainer.mixed_precision must be auto, no (fp32), bf16 or fp16, got "
                             f"{self.mixed_precision!r}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"trainer.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.dev_corpus_size is not None and self.dev_corpus_size <= 0:
            raise ValueError(f"trainer.dev_corpus_size must be > 0 or null, got {self.dev_corpus_size}")
