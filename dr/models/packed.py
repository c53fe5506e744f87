"""Padding-free ("packed") forward for BERT-family encoders.

A training batch pads every text to the longest one, so with passages of 20 to 200 tokens the token-wise
layers (embeddings, Q/K/V, attention output, feed-forward, LayerNorms) spend up to half their FLOPs on
padding. Here those layers run on the T real tokens only, gathered into a (T, H) tensor; only the attention
itself, which needs a per-sequence layout, scatters Q/K/V back to (B, heads, L, d) and calls
`scaled_dot_product_attention` with the key-padding mask, then gathers again. CPUs have no varlen
flash-attention kernel, so "unpad everything except attention" is where the gain is (attention is ~10% of
the FLOPs of all-MiniLM-L6-v2 at length 256); this is the layout of MosaicBERT / `bert_padding.unpad_input`.

The token-wise sub-modules are the Hugging Face model's own (same weights, activation, LayerNorm eps,
dropout modules; LoRA layers that peft put in their place are called as modules), so results equal `model(...).last_hidden_state` at real tokens up to float rounding.
transformers 5.24 has no CPU equivalent: `position_ids` packing is only honoured by the causal mask and
flash-attention-2 varlen (CUDA), and a block-diagonal 4D mask over one (1, T) row makes attention O(T^2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import BertModel, DistilBertModel, RobertaModel, XLMRobertaModel

from dr.models.dropout import drop_mask, keep_scale

__all__ = ["attend", "packed_hidden_states", "supports_packing"]


@dataclass(frozen=True)
class _Family:
    """Where one architecture family keeps the parts of a layer; the layer routine is shared."""

    positions: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (model, ids (B, L)) -> (B, L)
    layers: Callable[[nn.Module], nn.ModuleList]
    attention: Callable[[nn.Module], nn.Module]  # owns the q/k/v Linears and the probability dropout
    qkv_names: tuple[str, str, str]
    attention_output: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (layer, ctx, res)
    feed_forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (layer, x) -> x, residual included


def _grid_positions(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    # BERT and DistilBERT number the padded grid's columns, so left padding shifts positions exactly as in HF.
    length = input_ids.shape[1]
    return torch.arange(length, device=input_ids.device).expand_as(input_ids)


def _roberta_positions(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    # fairseq numbering, as RobertaEmbeddings: real tokens count from padding_idx + 1, read from the ids.
    pad = model.embeddings.padding_idx
    real = input_ids.ne(pad).long()
    return torch.cumsum(real, dim=1) * real + pad


def _bert_attention_output(layer: nn.Module, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    return layer.attention.output(context, residual)  # dense, dropout, LayerNorm(x + residual)


def _distilbert_attention_output(layer: nn.Module, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    # DistilBERT has no dropout after out_lin.
    return layer.sa_layer_norm(layer.attention.out_lin(context) + residual)


_BERT = _Family(
    positions=_grid_positions,
    layers=lambda model: model.encoder.layer,
    attention=lambda layer: layer.attention.self,
    qkv_names=("query", "key", "value"),
    attention_output=_bert_attention_output,
    # feed_forward_chunk, not forward: the chunking helper assumes a (B, L, H) layout.
    feed_forward=lambda layer, x: layer.feed_forward_chunk(x),
)
_ROBERTA = replace(_BERT, positions=_roberta_positions)
_DISTILBERT = _Family(
    positions=_grid_positions,
    layers=lambda model: model.transformer.layer,
    attention=lambda layer: layer.attention,
    qkv_names=("q_lin", "k_lin", "v_lin"),
    attention_output=_distilbert_attention_output,
    feed_forward=lambda layer, x: layer.output_layer_norm(layer.ffn.ff_chunk(x) + x),
)
# Exact types: a subclass may override forward, so it is not assumed to compute the same thing.
_FAMILIES: dict[type, _Family] = {
    BertModel: _BERT,
    RobertaModel: _ROBERTA,
    XLMRobertaModel: _ROBERTA,
    DistilBertModel: _DISTILBERT,
}


def supports_packing(model: nn.Module) -> bool:
    """True when `packed_hidden_states` computes exactly what `model(...)` computes.

    Supported: BertModel, RobertaModel, XLMRobertaModel and DistilBertModel encoders with absolute positions
    and full (unpruned) heads. Decoders, cross-attention and relative position embeddings (a config key that
    transformers 5 no longer implements, so such checkpoints are already misread) are refused.
    """
    family = _FAMILIES.get(type(model))
    if family is None:
        return False
    config = model.config
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return False
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return False
    hidden, heads = config.hidden_size, config.num_attention_heads
    if hidden % heads:
        return False
    for layer in family.layers(model):
        attention = family.attention(layer)
        if any(getattr(attention, name).out_features != hidden for name in family.qkv_names):
            return False  # pruned heads change the projection shapes
    return True


class _GatherRows(torch.autograd.Function):
    """`x.index_select(0, indices)` whose backward copies rows back instead of `index_add`: the indices are
    unique, and CPU index_add (scatter_add) was ~5x slower than index_copy, a visible share of a step."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(indices)
        ctx.rows = x.shape[0]
        return x.index_select(0, indices)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (indices,) = ctx.saved_tensors
        return grad.new_zeros(ctx.rows, *grad.shape[1:]).index_copy(0, indices, grad), None


def _embed(model: nn.Module, family: _Family, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
           indices: torch.Tensor) -> torch.Tensor:
    """Embeddings of the real tokens: ids (B, L), indices (T,) into the flat grid -> (T, H)."""
    emb = model.embeddings
    positions = family.positions(model, input_ids).flatten()[indices]
    hidden = emb.word_embeddings(input_ids.flatten()[indices])
    if hasattr(emb, "token_type_embeddings"):  # DistilBERT has none and ignores token_type_ids
        types = torch.zeros_like(indices) if token_type_ids is None else token_type_ids.flatten()[indices]
        hidden = hidden + emb.token_type_embeddings(types)
    hidden = hidden + emb.position_embeddings(positions)
    return emb.dropout(emb.LayerNorm(hidden))


def _layer(family: _Family, layer: nn.Module, heads: int, hidden: torch.Tensor, indices: torch.Tensor,
           key_mask: torch.Tensor) -> torch.Tensor:
    """One encoder layer on packed tokens: hidden (T, H), indices (T,), key_mask (B, 1, 1, L) -> (T, H)."""
    batch, length = key_mask.shape[0], key_mask.shape[-1]
    attention = family.attention(layer)
    linears = [getattr(attention, name) for name in family.qkv_names]
    if all(type(lin) is nn.Linear for lin in linears):
        # One GEMM for Q, K and V instead of three; concatenating (3H, H) weights is cheap next to (T, H) x (H, 3H).
        qkv = F.linear(hidden, torch.cat([lin.weight for lin in linears]), torch.cat([lin.bias for lin in linears]))
    else:  # adapter layers (LoRA) compute more than their weight: call each module
        qkv = torch.cat([lin(hidden) for lin in linears], dim=-1)
    size = hidden.shape[-1]
    grid = qkv.new_zeros(batch * length, 3 * size).index_copy(0, indices, qkv)  # padded only for attention
    q, k, v = grid.view(batch, length, 3, heads, size // heads).permute(2, 0, 3, 1, 4)  # (B, heads, L, d) each
    dropout = attention.dropout
    context = attend(q, k, v, key_mask, dropout.p if dropout.training else 0.0, (size // heads) ** -0.5)
    context = _GatherRows.apply(context.transpose(1, 2).reshape(batch * length, size), indices)  # (T, H)
    hidden = family.attention_output(layer, context, hidden)
    return family.feed_forward(layer, hidden)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor, dropout_p: float,
           scale: float) -> torch.Tensor:
    """softmax(q k^T * scale, keys where key_mask) with dropout on the probabilities, times v: (B, heads, L, d).

    SDPA's fused CPU kernel has no dropout, so with dropout_p > 0 torch runs its math path, which draws one
    Bernoulli sample per attention probability (`aten::bernoulli_`, the largest non-matmul cost of a CPU
    training step) and, for a boolean mask, a "safe" softmax with extra passes for fully masked rows, which
    cannot occur here (every row has a real token). On CPU with dropout this computes the same attention with
    an additive mask, a plain softmax and `dr.models.dropout`'s 16-bit masks; otherwise it is SDPA.
    """
    if dropout_p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p, scale=scale)
    scores = torch.matmul(q * scale, k.transpose(-1, -2))  # (B, heads, L, L); matmul's backward needs q, k only
    bias = torch.zeros(key_mask.shape, dtype=scores.dtype, device=scores.device).masked_fill_(~key_mask, -torch.inf)
    probs = torch.softmax(scores.add_(bias), dim=-1)
    keep = drop_mask(probs.shape, dropout_p, probs.device)
    # dropout(probs) @ v = (kept probs) @ (v * 1/P(keep)): the scale goes on v, 1/8 the size of probs here
    return torch.matmul(torch.where(keep, probs, 0.0), v * keep_scale(dropout_p))


def packed_hidden_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Last hidden states of a supported encoder, computed without padding in the token-wise layers.

    Args:
        model: a model for which `supports_packing(model)` is True (train or eval mode; dropout, gradient
            checkpointing per layer and autocast behave as in `model(...)`).
        input_ids, attention_mask: (B, L) padded batch; any padding side, every row with >= 1 real token.
        token_type_ids: optional (B, L); zeros when None, ignored by DistilBERT.

    Returns:
        (B, L, H): equal to `model(...).last_hidden_state` where attention_mask is 1, zeros elsewhere.
    """
    family = _FAMILIES[type(model)]
    batch, length = input_ids.shape
    indices = attention_mask.flatten().nonzero().squeeze(1)  # (T,) positions of real tokens in the flat grid
    key_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L), True = attend
    heads = model.config.num_attention_heads
    hidden = _embed(model, family, input_ids, token_type_ids, indices)
    for layer in family.layers(model):
        # Same condition as transformers' GradientCheckpointingLayer, so every_n_layers is honoured too.
        if getattr(layer, "gradient_checkpointing", False) and layer.training and torch.is_grad_enabled():
            hidden = checkpoint(_layer, family, layer, heads, hidden, indices, key_mask, use_reentrant=False)
        else:
            hidden = _layer(family, layer, heads, hidden, indices, key_mask)
    out = hidden.new_zeros(batch * length, hidden.shape[-1]).index_copy(0, indices, hidden)
    return out.view(batch, length, -1)
