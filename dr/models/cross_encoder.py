"""Cross-encoder: a Hugging Face encoder that reads `[CLS] query [SEP] passage [SEP]` and outputs one
relevance logit (a sequence-classification head with one label, as monoBERT, Nogueira & Cho 2019).

A checkpoint without such a head (a plain encoder, e.g. the default bi-encoder) gets a new, randomly
initialized head. Saved with `save_pretrained`, so `transformers`' AutoModelForSequenceClassification and
sentence-transformers' `CrossEncoder` load the export as it is.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from dr.dist import local_device
from dr.models.lora import LoraSettings, add_lora, is_lora, merged, save_adapter
from dr.models.precision import autocast, resolve_precision
from dr.models.resolve import resolve_model_path

logger = logging.getLogger(__name__)


@dataclass
class CrossEncoderConfig:
    """`max_length` bounds query + passage tokens together (the passage is truncated first)."""

    name_or_path: str
    max_length: int = 256
    batch_size: int = 32
    trust_remote_code: bool = False
    show_progress: bool = True
    device: str = "auto"  # auto: this process's GPU when torch sees one, else cpu
    precision: str = "auto"  # scoring: auto | fp32 | bf16 | fp16 (dr.models.precision)
    lora: LoraSettings | dict | None = None  # {r, alpha, dropout, target_modules}: adapters + the head train

    def __post_init__(self) -> None:
        resolve_precision(self.precision, "cpu", purpose="check")  # a bad value fails before loading
        self.lora = LoraSettings.parse(self.lora, "ranker.lora")
        if self.max_length < 8:
            raise ValueError(f"ranker.max_length must be >= 8, got {self.max_length}")
        if self.batch_size <= 0:
            raise ValueError(f"ranker.batch_size must be > 0, got {self.batch_size}")


class CrossEncoder(nn.Module):
    """`forward(batch) -> (N,) logits`; `score(queries, passages) -> (N,) float32 numpy` for inference."""

    def __init__(self, config: CrossEncoderConfig) -> None:
        super().__init__()
        self.config = config
        path = resolve_model_path(config.name_or_path)
        kw = {"trust_remote_code": config.trust_remote_code}
        self.tokenizer = AutoTokenizer.from_pretrained(path, **kw)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32,
                                                                        **kw)
        if config.lora is not None:  # peft's SEQ_CLS task also trains the (new) classification head
            self.model = add_lora(self.model, config.lora, task="SEQ_CLS")
        self.to(config.device if config.device != "auto" else local_device())
        logger.info("cross-encoder %s, max length %d", config.name_or_path, config.max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, queries: Sequence[str], passages: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded pair tensors; only the passage is truncated, unless the query alone is too long."""
        batch = self.tokenizer(list(queries), list(passages), padding=True, truncation="longest_first",
                               max_length=self.config.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**batch).logits.squeeze(-1)  # (N,)

    def gradient_checkpointing_enable(self) -> None:
        self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    @torch.inference_mode()
    def score(self, queries: Sequence[str], passages: Sequence[str], desc: str = "pairs") -> np.ndarray:
        """(N,) logits of the N (query, passage) pairs, in batches of similar length (longest first)."""
        if len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries but {len(passages)} passages")
        out = np.empty(len(queries), dtype=np.float32)
        if not len(queries):
            return out
        was_training = self.training
        self.eval()
        lengths = [len(q) + len(p) for q, p in zip(queries, passages)]  # characters: a cheap length proxy
        order = np.argsort(-np.asarray(lengths), kind="stable")
        bs = self.config.batch_size
        precision = resolve_precision(self.config.precision, self.device.type, purpose="scoring")
        with tqdm(total=len(order), desc=f"score {desc}", unit="pair", disable=not self.config.show_progress) as bar, \
                autocast(precision, self.device.type):
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                batch = self.tokenize([queries[i] for i in idx], [passages[i] for i in idx])
                out[idx] = self(batch).float().cpu().numpy()
                bar.update(len(idx))
        self.train(was_training)
        return out

    def save(self, path) -> None:
        """Hugging Face layout (safetensors) plus the tokenizer; see `dr.models.export.export_ranker`. Under
        LoRA: the merged model, and the adapter alone under `adapter/`."""
        merged(self.model).save_pretrained(path, safe_serialization=True)
        if is_lora(self.model):
            save_adapter(self.model, Path(path) / "adapter", self.config.name_or_path)
        self.tokenizer.save_pretrained(path)
