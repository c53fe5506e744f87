"""dr.models.dropout's 16-bit masks and packed attention's CPU dropout path (dr.models.packed.attend)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dr.models.dropout import drop_mask, keep_scale
from dr.models.packed import attend


def test_keep_scale_hand_values():
    # p = 0.1: round(6553.6) = 6554 of the 65,536 values drop, so P(keep) = 58982 / 65536
    assert keep_scale(0.1) == 65536 / 58982
    assert keep_scale(0.5) == 2.0
    assert keep_scale(0.0) == 1.0
    with pytest.raises(ValueError, match="dropout probability"):
        keep_scale(1.0)
    with pytest.raises(ValueError, match="dropout probability"):
        drop_mask((2,), -0.1)


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_drop_mask_keeps_the_quantized_probability(p):
    torch.manual_seed(0)
    keep = drop_mask((1000, 4001), p)  # 4,001,000 elements: not a multiple of the 4 per draw
    assert keep.dtype == torch.bool and keep.shape == (1000, 4001)
    want = 1 / keep_scale(p)
    sd = math.sqrt(want * (1 - want) / keep.numel())
    assert abs(keep.float().mean().item() - want) < 5 * sd
    # each of the four 16-bit lanes of a draw is used: every column position keeps at the same rate
    lanes = keep.flatten()[: 4 * (keep.numel() // 4)].view(-1, 4).float().mean(0)
    assert (lanes - want).abs().max().item() < 5 * sd * 2


def test_drop_mask_follows_the_seed():
    torch.manual_seed(7)
    first = drop_mask((64, 64), 0.1)
    torch.manual_seed(7)
    assert torch.equal(first, drop_mask((64, 64), 0.1))
    assert not torch.equal(first, drop_mask((64, 64), 0.1))  # the generator moved on


def _qkv(dtype=torch.float32):
    torch.manual_seed(1)
    q, k, v = (torch.randn(3, 2, 9, 4, dtype=dtype, requires_grad=True) for _ in range(3))
    key_mask = (torch.arange(9)[None] < torch.tensor([9, 5, 2])[:, None])[:, None, None, :]
    return q, k, v, key_mask


def test_attend_with_dropout_is_attention_with_the_drawn_mask():
    q, k, v, key_mask = _qkv()
    torch.manual_seed(3)
    got = attend(q, k, v, key_mask, 0.3, 0.5)
    got.pow(2).sum().backward()
    got_grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    torch.manual_seed(3)  # attend draws nothing before its mask, so the same seed gives the same mask
    keep = drop_mask((3, 2, 9, 9), 0.3)
    scores = (q @ k.transpose(-1, -2) * 0.5).masked_fill(~key_mask, -torch.inf)
    want = (scores.softmax(-1) * keep * keep_scale(0.3)) @ v
    want.pow(2).sum().backward()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    for got_grad, t in zip(got_grads, (q, k, v)):
        torch.testing.assert_close(got_grad, t.grad, atol=1e-5, rtol=1e-5)


def test_attend_without_dropout_is_sdpa():
    q, k, v, key_mask = _qkv()
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=0.5)
    assert torch.equal(attend(q, k, v, key_mask, 0.0, 0.5), want)


def test_attend_under_bf16_autocast_close_to_fp32():
    q, k, v, key_mask = _qkv()
    torch.manual_seed(5)
    want = attend(q, k, v, key_mask, 0.1, 0.5)
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attend(q, k, v, key_mask, 0.1, 0.5)
    got.float().sum().backward()
    cosine = F.cosine_similarity(got.float().flatten(1), want.flatten(1), dim=-1)
    assert cosine.min() >= 0.999
    assert q.grad is not None and torch.isfinite(q.grad).all()
