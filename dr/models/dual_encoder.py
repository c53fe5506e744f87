"""Dual encoder: any Hugging Face encoder as query and passage towers (shared or separate).

Embeddings are pooled token states (CLS, mean, last token or position-weighted mean); with `score: cosine`
they are L2-normalized so that inner product (what the FAISS index computes) is cosine similarity. Scores
are divided by `temperature` in training; the index ranks by the raw inner product, which orders passages
the same way. `truncate_dim` keeps the first d dimensions (renormalized for cosine), a Matryoshka prefix.

Every text is prefixed with its tower's `query_prefix` / `passage_prefix` ("query: ", an instruction)
wherever it is encoded: training, evaluation, mining and scoring all tokenize here. Decoder-only backbones
(any `AutoModel`: LLaMA, Mistral, Qwen) load with `dtype` and `attn_implementation`; `pooling: last` makes
the tokenizer append EOS (dr.models.decoder). `lora` trains low-rank adapters instead of the weights
(dr.models.lora).

Encoding (`encode_queries`, `encode_passages`, `encode_batches`) runs under inference mode in the
precision of `precision` (`auto`: bf16 where the hardware has native bf16 matmul, see
`dr.models.precision`), in length-sorted batches (`dr.encoding.plan`), and returns float32.
"""
from __future__ import annotations

import dataclasses
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

from dr.dist import local_device
from dr.encoding.cache import cache_key, weights_fingerprint
from dr.encoding.plan import length_sorted_batches
from dr.models.decoder import attention_kernel, ensure_eos, ensure_pad_token, weights_dtype
from dr.models.lora import LoraSettings, add_lora, base_model, trainable_parameters
from dr.models.packed import packed_hidden_states, supports_packing
from dr.models.pooling import POOLING_MODES, PoolingMode, pool
from dr.models.precision import Precision, autocast, resolve_precision
from dr.models.resolve import resolve_model_path, sentence_transformers_layout, sentence_transformers_prompts

logger = logging.getLogger(__name__)

Tower = Literal["query", "passage"]


@dataclass
class EncoderConfig:
    """How to build a dual encoder. `auto` pooling/score follow a sentence-transformers layout when the
    checkpoint has one (CLS and dot product otherwise)."""

    name_or_path: str
    pooling: Literal["auto", "cls", "mean", "last", "weighted_mean"] = "auto"
    score: Literal["auto", "dot", "cosine"] = "auto"
    temperature: float = 1.0
    shared: bool = True
    query_max_length: int = 64
    passage_max_length: int = 256
    batch_size: int = 64
    trust_remote_code: bool = False
    show_progress: bool = True
    device: str = "auto"  # auto: this process's GPU when torch sees one, else cpu (training: Accelerate's)
    precision: str = "auto"  # encoding: auto | fp32 | bf16 | fp16 (auto: bf16 on native-bf16 hardware)
    padding_free: bool = True  # BERT-family towers skip padded tokens outside attention (dr.models.packed)
    # prepended to every query / passage ("query: ", an instruction), written as the export's "query" /
    # "passage" prompts; null: the checkpoint's own sentence-transformers prompts of those names, else none
    query_prefix: str | None = None
    passage_prefix: str | None = None
    truncate_dim: int | None = None  # keep the first d dimensions of every embedding (Matryoshka); null: all
    dtype: str = "float32"  # the weights' dtype: float32 | bfloat16 | float16 (LLMs: bfloat16)
    attn_implementation: str = "auto"  # auto: flash_attention_2 when installed (CUDA, 16-bit), else sdpa
    lora: LoraSettings | dict | None = None  # {r, alpha, dropout, target_modules}: train adapters only
    lora_towers: list[str] = dataclasses.field(default_factory=lambda: ["query", "passage"])  # separate towers

    def __post_init__(self) -> None:
        resolve_precision(self.precision, "cpu", purpose="check")  # a bad value fails before loading
        weights_dtype(self.dtype)
        self.lora = LoraSettings.parse(self.lora)
        self.lora_towers = list(self.lora_towers)
        if not self.lora_towers or set(self.lora_towers) - {"query", "passage"}:
            raise ValueError(f"model.lora_towers must list query and/or passage, got {self.lora_towers}")
        if self.shared and set(self.lora_towers) != {"query", "passage"} and self.lora is not None:
            raise ValueError("model.lora_towers picks one of two separate towers: set model.shared=false")
        if self.pooling not in ("auto", *POOLING_MODES):
            raise ValueError(f"model.pooling must be auto or one of {', '.join(POOLING_MODES)}, got {self.pooling!r}")
        if self.truncate_dim is not None and self.truncate_dim <= 0:
            raise ValueError(f"model.truncate_dim must be a positive size or null, got {self.truncate_dim}")

    def with_weights(self, name_or_path: str) -> EncoderConfig:
        """The same settings with other weights, one shared tower, no adapters (a fixed model: a miner's, a
        teacher's)."""
        return dataclasses.replace(self, name_or_path=name_or_path, shared=True, lora=None)


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
        prompts = {t: sentence_transformers_prompts(towers[t]) for t in ("query", "passage")}
        self.prefixes: dict[str, str] = {
            "query": config.query_prefix if config.query_prefix is not None else prompts["query"].get("query", ""),
            "passage": (config.passage_prefix if config.passage_prefix is not None
                        else prompts["passage"].get("passage", "")),
        }
        self.pooling: PoolingMode = (st_pooling or "cls") if config.pooling == "auto" else config.pooling
        if config.score == "auto":
            self.score_kind = "cosine" if st_normalized else "dot"
        else:
            self.score_kind = config.score
        kw = {"trust_remote_code": config.trust_remote_code}
        self.tokenizer = AutoTokenizer.from_pretrained(towers["query"], **kw)
        ensure_pad_token(self.tokenizer)
        if self.pooling == "last":
            ensure_eos(self.tokenizer)
        dtype = weights_dtype(config.dtype)
        model_kw = {**kw, "dtype": dtype}
        kernel = attention_kernel(config.attn_implementation, dtype, config.device)
        if kernel is not None:
            model_kw["attn_implementation"] = kernel
        auto_kernel = config.attn_implementation == "auto"
        self.query_model = _load_model(towers["query"], model_kw, auto_kernel)
        self.passage_model = (self.query_model if config.shared
                              else _load_model(towers["passage"], model_kw, auto_kernel))
        for tower in (self.query_model, self.passage_model):
            _freeze_unused_pooler(tower)
        if config.lora is not None:  # separate towers: only those in lora_towers (a frozen tower needs none)
            if config.shared:
                self.query_model = self.passage_model = add_lora(self.query_model, config.lora)
            else:
                if "query" in config.lora_towers:
                    self.query_model = add_lora(self.query_model, config.lora)
                if "passage" in config.lora_towers:
                    self.passage_model = add_lora(self.passage_model, config.lora)
        hidden = int(self.query_model.config.hidden_size)
        if config.truncate_dim is not None and config.truncate_dim > hidden:
            raise ValueError(f"model.truncate_dim={config.truncate_dim}, but {config.name_or_path} embeds in "
                             f"{hidden} dimensions")
        self.to(config.device if config.device != "auto" else local_device())
        trainable, total = trainable_parameters(self)
        logger.info(
            "dual encoder %s: %s towers, %s pooling, %s score, %d of %d parameters trainable%s",
            config.name_or_path, "shared" if config.shared else "separate", self.pooling, self.score_kind,
            trainable, total, f", LoRA r={config.lora.r}" if config.lora is not None else "",
        )

    @property
    def device(self) -> torch.device:
        return next(self.query_model.parameters()).device

    @property
    def dim(self) -> int:
        """The embeddings' size: `truncate_dim` when set, else the model's hidden size."""
        return self.config.truncate_dim or int(self.query_model.config.hidden_size)

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def precision(self) -> Precision:
        return resolve_precision(self.config.precision, self.device.type)

    def identity(self, tower: str) -> str:
        """What a tower's embeddings depend on (weights, pooling, score, length, precision, packing, prefix,
        dimensions), as a cache key;
        `tokenizer`: what its token lengths depend on."""
        if tower == "tokenizer":
            return cache_key(self.config.name_or_path, type(self.tokenizer).__name__, str(len(self.tokenizer)),
                             str(self.config.passage_max_length), *self._variant("passage"))
        return cache_key(weights_fingerprint(self.tower(tower)), self.pooling, self.score_kind,  # type: ignore[arg-type]
                         str(self.max_length(tower)), self.precision.name, f"packed={self.config.padding_free}",
                         *self._variant(tower))  # type: ignore[arg-type]

    def _variant(self, tower: Tower) -> tuple[str, ...]:
        """Key parts that only settings off their defaults add, so that existing cache entries stay valid."""
        parts = []
        if self.prefix(tower):
            parts.append(f"prefix={self.prefix(tower)!r}")
        if self.config.truncate_dim is not None:
            parts.append(f"dim={self.config.truncate_dim}")
        if self.pooling == "last":
            parts.append("eos")
        return tuple(parts)

    def prefix(self, tower: Tower) -> str:
        return self.prefixes[tower]

    def _texts(self, tower: Tower, texts: Sequence[str]) -> list[str]:
        prefix = self.prefix(tower)
        return [prefix + t for t in texts] if prefix else list(texts)

    def tower(self, tower: Tower) -> nn.Module:
        return self.query_model if tower == "query" else self.passage_model

    def max_length(self, tower: Tower) -> int:
        return self.config.query_max_length if tower == "query" else self.config.passage_max_length

    def tokenize(self, tower: Tower, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded tensors for `texts` (with the tower's prefix), truncated to the tower's max length, on the
        model's device."""
        batch = self.tokenizer(
            self._texts(tower, texts), padding=True, truncation=True, max_length=self.max_length(tower),
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def embed(self, tower: Tower, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L) token tensors -> (B, H) embeddings, normalized when the score is cosine. With
        `padding_free` and a padded batch, a BERT-family tower runs its token-wise layers on the real
        tokens only (same values up to float rounding, fewer FLOPs). Training on CPU it takes that path for
        an unpadded batch too, for its attention dropout (`dr.models.packed.attend`)."""
        model = self.tower(tower)
        core = base_model(model)  # under LoRA, the transformers model whose layers carry the adapters
        padded = not bool(batch["attention_mask"].all())
        cpu_training = model.training and batch["input_ids"].device.type == "cpu"
        if self.config.padding_free and (padded or cpu_training) and supports_packing(core):
            hidden = packed_hidden_states(core, batch["input_ids"], batch["attention_mask"],
                                          batch.get("token_type_ids"))  # (B, L, H), zeros at padding
        else:
            hidden = model(**batch).last_hidden_state  # (B, L, H)
        emb = pool(hidden, batch["attention_mask"], self.pooling)
        if self.config.truncate_dim is not None:
            emb = emb[:, : self.config.truncate_dim]
        return F.normalize(emb, p=2, dim=-1) if self.score_kind == "cosine" else emb

    def score(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """(B, H) queries x (M, H) passages -> (B, M) similarities divided by the temperature."""
        return q @ p.T / self.config.temperature

    def gradient_checkpointing_enable(self) -> None:
        """Non-reentrant: a shared tower is used twice per step, which reentrant checkpointing under DDP
        rejects ("mark a variable ready only once")."""
        towers = {id(self.query_model): self.query_model, id(self.passage_model): self.passage_model}
        for tower in towers.values():
            tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def encode_queries(self, texts: Sequence[str], desc: str = "queries") -> np.ndarray:
        return self._encode("query", texts, desc)

    def encode_passages(self, texts: Sequence[str], desc: str = "passages") -> np.ndarray:
        return self._encode("passage", texts, desc)

    def token_lengths(self, tower: Tower, texts: Sequence[str]) -> np.ndarray:
        """(N,) token counts of `texts` after truncation to the tower's max length."""
        if not len(texts):
            return np.empty(0, np.int64)
        lengths = self.tokenizer(self._texts(tower, texts), truncation=True, max_length=self.max_length(tower),
                                 return_length=True, return_attention_mask=False)["length"]
        return np.asarray(lengths, np.int64)

    def _encode(self, tower: Tower, texts: Sequence[str], desc: str) -> np.ndarray:
        """Encode in batches of similar length (longest first) so padding is minimal; (N, H) float32."""
        batches = length_sorted_batches(self.token_lengths(tower, texts), self.config.batch_size)
        return self.encode_batches(tower, texts, batches, desc)

    @torch.inference_mode()
    def encode_batches(self, tower: Tower, texts: Sequence[str], batches: Sequence[np.ndarray],
                       desc: str = "texts") -> np.ndarray:
        """(N, H) float32 embeddings of `texts`, encoded one batch (positions into `texts`) at a time;
        rows of texts in no batch are left undefined."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return out
        was_training = self.training
        self.eval()
        precision, device_type = self.precision, self.device.type
        total = sum(len(b) for b in batches)
        with tqdm(total=total, desc=f"encode {desc}", unit="text", disable=not self.config.show_progress) as bar, \
                autocast(precision, device_type):
            for idx in batches:
                batch = self.tokenize(tower, [texts[i] for i in idx])
                out[idx] = self.embed(tower, batch).float().cpu().numpy()
                bar.update(len(idx))
        self.train(was_training)
        return out


def _load_model(path: str, kw: dict, auto_kernel: bool) -> nn.Module:
    """`AutoModel.from_pretrained(path, **kw)`; when `auto` chose flash_attention_2 and the architecture
    does not take it, transformers' default kernel instead (a kernel the user named fails as it is)."""
    try:
        return AutoModel.from_pretrained(path, **kw)
    except (ValueError, ImportError) as e:
        if not (auto_kernel and kw.get("attn_implementation") == "flash_attention_2"):
            raise
        logger.warning("flash_attention_2 is not available for %s (%s); using the default attention", path, e)
        return AutoModel.from_pretrained(path, **{k: v for k, v in kw.items() if k != "attn_implementation"})


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
