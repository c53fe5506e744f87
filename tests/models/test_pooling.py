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
