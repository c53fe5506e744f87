"""The one capability probe behind `model.precision` and `trainer.mixed_precision`."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from dr.models import precision as P


@pytest.fixture
def flags(monkeypatch):
    """Set the CPU flags the probe sees (and drop the suite-wide DR_NATIVE_BF16=0)."""
    monkeypatch.delenv("DR_NATIVE_BF16", raising=False)
    monkeypatch.setattr(P, "_logged", set())

    def set_flags(*names: str) -> None:
        monkeypatch.setattr(P, "cpu_flags", lambda: frozenset(names))
    return set_flags


def test_auto_is_fp32_on_a_cpu_without_native_bf16(flags, caplog):
    flags("avx2", "fma", "avx512f")  # AVX-512 alone is not enough
    with caplog.at_level(logging.INFO, logger="dr.models.precision"):
        p = P.resolve_precision("auto", "cpu")
    assert p.name == "fp32" and p.dtype is None and p.accelerate == "no"
    assert "no native bf16" in caplog.text


def test_the_override_is_named_as_the_reason(flags, monkeypatch):
    flags("avx2", "avx512_bf16")  # the CPU has it, the override says no
    monkeypatch.setenv("DR_NATIVE_BF16", "0")
    p = P.resolve_precision("auto", "cpu")
    assert p.name == "fp32" and "DR_NATIVE_BF16=0 overrides" in p.reason


@pytest.mark.parametrize("flag", ["amx_bf16", "avx512_bf16"])
def test_auto_is_bf16_on_a_cpu_with_native_bf16(flags, flag, caplog):
    flags("avx2", flag)
    with caplog.at_level(logging.INFO, logger="dr.models.precision"):
        p = P.resolve_precision("auto", "cpu", "training")
        P.resolve_precision("auto", "cpu", "training")
    assert p.name == "bf16" and p.dtype == torch.bfloat16 and p.accelerate == "bf16" and flag in p.reason
    assert caplog.text.count("training precision auto -> bf16") == 1  # logged once


def test_auto_on_cuda_follows_the_device(flags, monkeypatch):
    flags()
    monkeypatch.setattr(P, "cuda_bf16", lambda: True)
    assert P.resolve_precision("auto", "cuda").name == "bf16"
    monkeypatch.setattr(P, "cuda_bf16", lambda: False)
    assert P.resolve_precision("auto", "cuda").name == "fp32"


def test_explicit_values_aliases_and_errors(flags):
    flags("amx_bf16")
    assert P.resolve_precision("fp32", "cpu").name == "fp32"
    assert P.resolve_precision("no", "cpu").name == "fp32"  # Accelerate's spelling
    assert P.resolve_precision("bf16", "cuda").name == "bf16"
    with pytest.raises(ValueError, match="auto, fp32, bf16 or fp16"):
        P.resolve_precision("fp8", "cpu")


def test_environment_overrides_the_probe(flags, monkeypatch):
    flags("amx_bf16")
    monkeypatch.setenv("DR_NATIVE_BF16", "0")
    assert P.resolve_precision("auto", "cpu").name == "fp32"
    flags("avx2")
    monkeypatch.setenv("DR_NATIVE_BF16", "1")
    assert P.resolve_precision("auto", "cpu").name == "bf16"


def test_bf16_encoding_is_close_to_fp32(tiny_model_dir):
    from conftest import PASSAGES
    from dr.models.dual_encoder import DualEncoder, EncoderConfig

    texts = [f"{t} {x}" for t, x in PASSAGES.values()]
    runs = {}
    for name in ("fp32", "bf16"):
        enc = DualEncoder(EncoderConfig(str(tiny_model_dir), pooling="mean", score="cosine", precision=name,
                                        show_progress=False))
        runs[name] = enc.encode_passages(texts)
        assert runs[name].dtype == np.float32
    cos = (runs["fp32"] * runs["bf16"]).sum(1)
    assert cos.min() > 0.995 and not np.array_equal(runs["fp32"], runs["bf16"])
    ids = {name: DualEncoder(EncoderConfig(str(tiny_model_dir), precision=name, show_progress=False)).identity(
        "passage") for name in ("fp32", "bf16")}
    assert ids["fp32"] != ids["bf16"]  # cached embeddings of one precision are never served for the other


def test_a_bad_model_precision_fails_before_loading(tmp_path):
    from dr.models.dual_encoder import EncoderConfig

    with pytest.raises(ValueError, match="precision must be"):
        EncoderConfig(str(tmp_path / "nowhere"), precision="int8")


@pytest.mark.gpu
def test_auto_on_a_real_gpu_encodes_close_to_fp32(tiny_model_dir):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from conftest import PASSAGES
    from dr.models.dual_encoder import DualEncoder, EncoderConfig

    texts = [f"{t} {x}" for t, x in PASSAGES.values()]
    out = {p: DualEncoder(EncoderConfig(str(tiny_model_dir), pooling="mean", score="cosine", precision=p,
                                        device="cuda", show_progress=False)).encode_passages(texts)
           for p in ("fp32", "auto")}
    assert (out["fp32"] * out["auto"]).sum(1).min() > 0.995
