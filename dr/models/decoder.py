"""What decoder-only backbones (LLaMA, Mistral, Qwen) need to serve as embedders: a padding token, the
EOS that last-token pooling reads (RepLLaMA, Ma et al. 2023, appends it to every text), the weights' dtype
and the attention kernel.

EOS is appended by the tokenizer itself (its post-processor), not by dr after tokenizing, so that the saved
tokenizer does the same in `transformers` and `sentence-transformers` (what Qwen3-Embedding and
E5-Mistral's tokenizers ship). Truncation then keeps the EOS: the text is cut before it.
"""
from __future__ import annotations

import importlib.util
import logging

import torch

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def weights_dtype(name: str) -> torch.dtype:
    """`model.dtype` -> torch dtype (float32 | bfloat16 | float16, or fp32 | bf16 | fp16)."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"model.dtype must be one of {', '.join(DTYPES)}, got {name!r}") from None


def attention_kernel(requested: str, dtype: torch.dtype, device: str) -> str | None:
    """The `attn_implementation` to load with: `auto` is flash_attention_2 when the flash-attn package is
    installed, the model runs on CUDA and its weights are 16-bit (what the kernel takes), else transformers'
    default (sdpa wherever the architecture has it); any other value is passed as given (sdpa, eager,
    flash_attention_2, ...)."""
    if requested != "auto":
        return requested
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda and dtype in (torch.bfloat16, torch.float16) and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None


def ensure_pad_token(tokenizer) -> None:
    """Decoder tokenizers often have no padding token (LLaMA): pad with UNK when there is one, else EOS. The
    attention mask, not the id, tells pooling where the text ends."""
    if tokenizer.pad_token is not None:
        return
    token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    if token is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad, unk or eos token to pad batches with")
    tokenizer.pad_token = token
    logger.info("tokenizer has no padding token: padding with %r", token)


def appends_eos(tokenizer) -> bool:
    """True when tokenizing a text ends it with the EOS token."""
    eos = tokenizer.eos_token_id
    ids = tokenizer("a")["input_ids"]
    return eos is not None and bool(ids) and ids[-1] == eos


def ensure_eos(tokenizer) -> None:
    """Make `tokenizer` append EOS to every text (keeping a BOS it already adds); no-op when it already does.

    Raises ValueError for a tokenizer without an EOS token or without a Rust post-processor to change."""
    if appends_eos(tokenizer):
        return
    if tokenizer.eos_token is None:
        raise ValueError(f"pooling=last appends EOS, but tokenizer {type(tokenizer).__name__} has no eos_token")
    if not hasattr(type(tokenizer), "add_eos_token") or not hasattr(tokenizer, "update_post_processor"):
        raise ValueError(f"pooling=last needs the tokenizer to append EOS; {type(tokenizer).__name__} is not a fast "
                         "(tokenizers) tokenizer whose post-processor dr can set")
    bos = tokenizer.bos_token_id
    with_special = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    adds_bos = bos is not None and with_special[:1] == [bos] and plain[:1] != [bos]
    object.__setattr__(tokenizer, "_add_bos_token", adds_bos)  # set quietly, then rebuild once with EOS
    tokenizer.add_eos_token = True
    tokenizer.init_kwargs.update(add_bos_token=adds_bos, add_eos_token=True)  # saved with the tokenizer
    if not appends_eos(tokenizer):
        raise ValueError(f"could not make tokenizer {type(tokenizer).__name__} append its EOS token")
    logger.info("tokenizer now appends %r to every text (last-token pooling)", tokenizer.eos_token)
