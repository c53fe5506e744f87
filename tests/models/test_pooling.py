from __future__ import annotations

import pytest
import torch

from dr.models.pooling import pool


def test_mean_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[2.0, 0.0], [9.0, 9.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = pool(hidden, mask, "mean")
    assert torch.allclose(out, torch.tensor([[2.0, 3.0], [2.0, 0.0]]))


def test_cls_pooling_takes_first_token():
    hidden = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    out = pool(hidden, torch.ones(2, 3), "cls")
    assert out.tolist() == [[0.0, 1.0], [6.0, 7.0]]


def test_unknown_pooling_is_an_error():
    with pytest.raises(ValueError, match="pooling"):
        pool(torch.zeros(1, 1, 2), torch.ones(1, 1), "max")


def test_last_token_pooling_under_both_padding_sides():
    # three real tokens (states 1, 2, 4) padded to 5 on the right and on the left
    right = torch.tensor([[[1.0], [2.0], [4.0], [7.0], [7.0]]])
    left = torch.tensor([[[7.0], [7.0], [1.0], [2.0], [4.0]]])
    assert pool(right, torch.tensor([[1, 1, 1, 0, 0]]), "last").item() == 4.0
    assert pool(left, torch.tensor([[0, 0, 1, 1, 1]]), "last").item() == 4.0


def test_weighted_mean_weights_real_token_positions_under_both_paddings():
    # (1*1 + 2*2 + 3*4) / (1 + 2 + 3) = 17/6, whichever side the padding is on
    right = torch.tensor([[[1.0], [2.0], [4.0], [7.0]]])
    left = torch.tensor([[[7.0], [1.0], [2.0], [4.0]]])
    assert torch.allclose(pool(right, torch.tensor([[1, 1, 1, 0]]), "weighted_mean"), torch.tensor([[17 / 6]]))
    assert torch.allclose(pool(left, torch.tensor([[0, 1, 1, 1]]), "weighted_mean"), torch.tensor([[17 / 6]]))
