"""A stand-in encoder: a deterministic random projection of each text's tokens, behind the encoder
interface that evaluation, the miner and `dr.mine` use (`identity`, `token_lengths`, `encode_batches`).

It isolates the framework's own cost at scale (`scripts/eval_scale.py`, `scripts/scale.py`): the real
pipeline runs (corpus store, batch plans, sharded encoding, the embedding cache, faiss, merging,
ir_measures) while the model's cost, measured separately, is near zero. A text's embedding is the
L2-normalized sum of fixed random vectors (seeded, N(0, 1/dim)) of its WordPiece tokens, so texts that
share words are close: retrieval works, lexically.

    python -m dr.evaluate model=standin data=msmarco       # on any data config
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from transformers import AutoTokenizer

from dr.encoding.cache import cache_key
from dr.encoding.plan import length_sorted_batches
from dr.models.resolve import resolve_model_path


@dataclass
class StandinConfig:
    """`tokenizer`: whose WordPiece vocabulary splits the texts (default: all-MiniLM-L6-v2's, offline)."""

    dim: int = 384
    tokenizer: str = "sentence-transformers/all-MiniLM-L6-v2"
    seed: int = 0
    query_max_length: int = 64
    passage_max_length: int = 256
    batch_size: int = 1024
    temperature: float = 1.0
    show_progress: bool = False

    def build(self) -> StandinEncoder:
        return StandinEncoder(self)


class StandinEncoder:
    """`encode_queries` / `encode_passages` / `encode_batches` -> (N, dim) float32, unit norm."""

    pooling = "sum"
    score_kind = "cosine"

    def __init__(self, config: StandinConfig) -> None:
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(config.tokenizer))
        rng = np.random.default_rng(config.seed)
        self.table = (rng.standard_normal((len(self.tokenizer), config.dim)) / np.sqrt(config.dim)).astype(np.float32)

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    def max_length(self, tower: str) -> int:
        return self.config.query_max_length if tower == "query" else self.config.passage_max_length

    def identity(self, tower: str) -> str:
        return cache_key("standin", str(self.config.dim), str(self.config.seed), self.config.tokenizer,
                         str(self.max_length("passage" if tower == "tokenizer" else tower)))

    def _ids(self, tower: str, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length(tower),
                              add_special_tokens=False, return_attention_mask=False)["input_ids"]

    def token_lengths(self, tower: str, texts: Sequence[str]) -> np.ndarray:
        return np.fromiter((len(x) for x in self._ids(tower, texts)), np.int64, count=len(texts))

    def encode_batches(self, tower: str, texts: Sequence[str], batches: Sequence[np.ndarray],
                       desc: str = "texts") -> np.ndarray:
        out = np.empty((len(texts), self.dim), np.float32)
        for idx in batches:
            ids = self._ids(tower, [texts[i] for i in idx])
            indptr = np.concatenate([[0], np.cumsum([len(x) for x in ids])])
            flat = np.fromiter(itertools.chain.from_iterable(ids), np.int64, count=int(indptr[-1]))
            counts = sparse.csr_matrix((np.ones(len(flat), np.float32), flat, indptr), shape=(len(ids), len(self.table)))
            emb = np.asarray(counts @ self.table, dtype=np.float32)  # (B, dim): each text's token vectors summed
            out[idx] = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return out

    def _encode(self, tower: str, texts: Sequence[str]) -> np.ndarray:
        return self.encode_batches(tower, texts, length_sorted_batches(self.token_lengths(tower, texts),
                                                                       self.batch_size))

    def encode_queries(self, texts: Sequence[str], desc: str = "queries") -> np.ndarray:
        return self._encode("query", texts)

    def encode_passages(self, texts: Sequence[str], desc: str = "passages") -> np.ndarray:
        return self._encode("passage", texts)


def build_encoder(config):
    """The encoder a model config describes: `config.build()` where it has one (the stand-in), else a
    `DualEncoder`."""
    if hasattr(config, "build"):
        return config.build()
    from dr.models.dual_encoder import DualEncoder

    return DualEncoder(config)
