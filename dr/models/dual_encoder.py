"""Dual encoder: any Hugging Face encoder as query and passage towers (shared or separate).

Embeddings are pooled token states (CLS or mean); with `score: cosine` they are L2-normalized so that
inner product (what the FAISS index computes) is cosine similarity. Scores are divided by `temperature`
in training; the index ranks by the raw inner product, which orders passages the same way.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from dr.models.pooling import PoolingMode, pool
from dr.models.resolve import resolve_model_path, sentence_transformers_layout

logger = logging.getLogger(__name__)

Tower = Literal["query", "passage"]


@dataclass
class EncoderConfig:
    """How to build a dual encoder. `auto` pooling/score follow a sentence-transformers layout when the
    checkpoint has one (CLS and dot product otherwise)."""

    name_or_path: str
    pooling: Literal["auto", "cls", "mean"] = "auto"
    score: Literal["auto", "dot", "cosine"] = "auto"
    temperature: float = 1.0
    shared: bool = True
    query_max_length: int = 64
    passage_max_length: int = 256
    batch_size: int = 64
    trust_remote_code: bool = False
    show_progress: bool = True
    device: str = "auto"  # auto: cuda when torch sees a GPU, else cpu (training moves it via Accelerate)


class DualEncoder(nn.Module):
    """Query and passage towers over Hugging Face encoders.

    `encode_queries` / `encode_passages` return float32 numpy arrays (N, H) computed in length-sorted
    batches under inference mode; `embed(tower, texts)` is the differentiable path used in training.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        if config.temperature <= 0:
            raise ValueError(f"model.temperature must be > 0, got {config.temperature}")
        self.config = config
        path = resolve_model_path(config.name_or_path)
        towers = _tower_paths(path, config.shared)
        st_pooling, st_normalized = sentence_transformers_layout(towers["query"])
        self.pooling: PoolingMode = (st_pooling or "cls") if config.pooling == "auto" else config.pooling
        if config.score == "auto":
            self.score_kind = "cosine" if st_normalized else "dot"
        else:
            self.score_kind = config.score
        kw = {"trust_remote_code": config.trust_remote_code}
        self.tokenizer = AutoTokenizer.from_pretrained(towers["query"], **kw)
        self.query_model = AutoModel.from_pretrained(towers["query"], **kw)
        self.passage_model = self.query_model if config.shared else AutoModel.from_pretrained(towers["passage"], **kw)
        for tower in (self.query_model, self.passage_model):
            _freeze_unused_pooler(tower)
        device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.to(device)
        logger.info(
            "dual encoder %s: %s towers, %s pooling, %s score", config.name_or_path,
            "shared" if config.shared else "separate", self.pooling, self.score_kind,
        )

    @property
    def device(self) -> torch.device:
        return next(self.query_model.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.query_model.config.hidden_size)

    def tower(self, tower: Tower) -> nn.Module:
        return self.query_model if tower == "query" else self.passage_model

    def max_length(self, tower: Tower) -> int:
        return self.config.query_max_length if tower == "query" else self.config.passage_max_length

    def tokenize(self, tower: Tower, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded tensors for `texts`, truncated to the tower's max length, on the model's device."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length(tower), return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def embed(self, tower: Tower, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L) token tensors -> (B, H) embeddings, normalized when the score is cosine."""
        hidden = self.tower(tower)(**batch).last_hidden_state  # (B, L, H)
        emb = pool(hidden, batch["attention_mask"], self.pooling)
        return F.normalize(emb, p=2, dim=-1) if self.score_kind == "cosine" else emb

    def score(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """(B, H) queries x (M, H) passages -> (B, M) similarities divided by the temperature."""
        return q @ p.T / self.config.temperature

    def encode_queries(self, texts: Sequence[str], desc: str = "queries") -> np.ndarray:
        return self._encode("query", texts, desc)

    def encode_passages(self, texts: Sequence[str], desc: str = "passages") -> np.ndarray:
        return self._encode("passage", texts, desc)

    @torch.inference_mode()
    def _encode(self, tower: Tower, texts: Sequence[str], desc: str) -> np.ndarray:
        """Encode in batches of similar length (longest first) so padding is minimal; (N, H) float32."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        was_training = self.training
        self.eval()
        max_len = self.max_length(tower)
        lengths = self.tokenizer(list(texts), truncation=True, max_length=max_len, return_length=True)["length"]
        order = np.argsort(-np.asarray(lengths), kind="stable")
        bs = self.config.batch_size
        with tqdm(total=len(texts), desc=f"encode {desc}", unit="text", disable=not self.config.show_progress) as bar:
            for start in range(0, len(texts), bs):
                idx = order[start : start + bs]
                batch = self.tokenize(tower, [texts[i] for i in idx])
                out[idx] = self.embed(tower, batch).float().cpu().numpy()
                bar.update(len(idx))
        self.train(was_training)
        return out


def _freeze_unused_pooler(model: nn.Module) -> None:
    """BERT-style poolers are not used (we pool hidden states); a parameter that never gets a gradient
    would stall DDP's gradient buckets, so it is frozen (and exported unchanged)."""
    for name, param in model.named_parameters():
        if name.startswith("pooler."):
            param.requires_grad_(False)


def _tower_paths(path: str, shared: bool) -> dict[Tower, str]:
    """A directory exported with separate towers holds `query/` and `passage/`; use them."""
    base = Path(path)
    if (base / "query").is_dir() and (base / "passage").is_dir():
        if shared:
            raise ValueError(f"{path} holds separate query/ and passage/ towers; set model.shared=false")
        return {"query": str(base / "query"), "passage": str(base / "passage")}
    return {"query": path, "passage": path}
