"""LoRA (Hu et al., ICLR 2022) through peft for the encoder towers and the cross-encoder:
`model.lora: {r, alpha, dropout, target_modules}` (and `ranker.lora`).

The base weights are frozen; only the low-rank adapters (and, for the cross-encoder, its new
classification head) train. A checkpoint's model.safetensors holds the adapter with the base (resume is
exact); the export holds the merged model, which `transformers` and `sentence-transformers` load as any
other, and the adapter alone under `adapter/`, which `peft.PeftModel.from_pretrained(base, dir)` loads.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn


@dataclass
class LoraSettings:
    """`target_modules`: module names (or one regex) that get adapters; null: peft's default for the
    architecture (BERT: query, value; LLaMA: q_proj, v_proj)."""

    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    target_modules: list[str] | str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.r <= 0 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"lora needs r > 0, alpha > 0 and dropout in [0, 1), got r={self.r}, "
                             f"alpha={self.alpha}, dropout={self.dropout}")

    @classmethod
    def parse(cls, value, where: str = "model.lora") -> LoraSettings | None:
        """None, a LoraSettings, or a mapping of its fields."""
        if value is None or isinstance(value, LoraSettings):
            return value
        try:
            settings = dict(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be null or a mapping of r, alpha, dropout, target_modules; "
                             f"got {value!r}") from None
        unknown = set(settings) - {"r", "alpha", "dropout", "target_modules"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: r, alpha, dropout, target_modules)")
        if isinstance(settings.get("target_modules"), (list, tuple)):
            settings["target_modules"] = list(settings["target_modules"])
        return cls(**settings)


def add_lora(model: nn.Module, settings: LoraSettings, task: str = "FEATURE_EXTRACTION") -> nn.Module:
    """`model` wrapped by peft with fresh adapters (B = 0, so it computes what `model` did), base frozen."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ImportError("model.lora needs peft: pip install 'dr[lora]' (or pip install peft)") from e
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules, task_type=task)
    return get_peft_model(model, config)


def is_lora(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (its Linear layers carrying the adapters); `model` itself
    when it has none."""
    return model.get_base_model() if is_lora(model) else model


def merged(model: nn.Module) -> nn.Module:
    """A plain transformers model equal to base + adapter (a copy; `model` keeps training)."""
    return copy.deepcopy(model).merge_and_unload() if is_lora(model) else model


def save_adapter(model: nn.Module, path: Path, base_name: str) -> None:
    """The adapter alone (adapter_config.json, adapter_model.safetensors), naming `base_name` as its base."""
    for config in model.peft_config.values():
        config.base_model_name_or_path = base_name
    model.save_pretrained(path, safe_serialization=True)


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
