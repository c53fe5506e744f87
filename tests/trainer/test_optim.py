"""The default optimizer: AdamW, fused where torch supports it."""
from __future__ import annotations

import logging

import pytest
import torch

from dr.trainer.optim import adamw


def test_fused_by_default_where_supported_and_same_update_as_foreach():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    fused, plain = adamw(a.parameters(), lr=0.1), adamw(b.parameters(), lr=0.1, fused=False)
    assert fused.defaults["fused"] is True  # CPU and CUDA have the fused kernel in torch >= 2.4
    x = torch.randn(8, 4)
    for model, opt in ((a, fused), (b, plain)):
        for _ in range(3):
            model(x).square().sum().backward()
            opt.step()
            opt.zero_grad()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_unsupported_fused_falls_back_with_a_log_line(monkeypatch, caplog):
    real = torch.optim.AdamW

    def no_fused(params, fused=None, **kw):
        if fused:
            raise RuntimeError("fused=True requires all the params to be on a supported device")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    with caplog.at_level(logging.INFO, logger="dr.trainer.optim"):
        opt = adamw(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    assert not opt.defaults.get("fused") and "foreach" in caplog.text
    with pytest.raises(RuntimeError):
        adamw(torch.nn.Linear(2, 2).parameters(), lr=1e-3, fused=True)
