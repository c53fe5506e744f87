"""The packed forward against the Hugging Face padded forward, on tiny random encoders (offline)."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    GPT2Config,
    GPT2Model,
    RobertaConfig,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaModel,
)

import dr.models.packed as packed
from dr.models.packed import packed_hidden_states, supports_packing

LENGTHS = [1, 16, 5, 11]  # a one-token text, one at the full padded length, very different lengths
ARCHS = ["bert", "roberta", "xlm-roberta", "distilbert"]


def _model(arch: str, dropout: float = 0.0, attention_dropout: float | None = None) -> torch.nn.Module:
    """A 2-layer, hidden-32 encoder with random weights; dropout probabilities as given."""
    attention_dropout = dropout if attention_dropout is None else attention_dropout
    torch.manual_seed(0)
    if arch == "distilbert":
        config = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                  max_position_embeddings=64, dropout=dropout, attention_dropout=attention_dropout)
        return DistilBertModel(config)
    kwargs = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=64, type_vocab_size=2, hidden_dropout_prob=dropout,
                  attention_probs_dropout_prob=attention_dropout)
    if arch == "bert":
        return BertModel(BertConfig(**kwargs))
    if arch == "roberta":
        return RobertaModel(RobertaConfig(pad_token_id=1, **kwargs))
    return XLMRobertaModel(XLMRobertaConfig(pad_token_id=1, **kwargs))


def _batch(model: torch.nn.Module, left: bool = False) -> dict[str, torch.Tensor]:
    """Random ids padded with the model's pad id to the longest length; right padding unless `left`."""
    gen = torch.Generator().manual_seed(1)
    length = max(LENGTHS)
    ids = torch.full((len(LENGTHS), length), model.config.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(LENGTHS):
        cols = slice(length - n, length) if left else slice(0, n)
        ids[row, cols] = torch.randint(3, 100, (n,), generator=gen)
        mask[row, cols] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if not isinstance(model, DistilBertModel):
        batch["token_type_ids"] = (torch.arange(length) >= 3).long().expand_as(ids) * mask  # a second segment
    return batch


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * m).sum(1) / m.sum(1)  # (B, H)


def _reference(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).last_hidden_state  # (B, L, H)


def _packed(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return packed_hidden_states(model, **batch)  # (B, L, H)


def _loss_and_grads(model: torch.nn.Module, forward, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    model.zero_grad(set_to_none=True)
    pooled = _mean_pool(forward(model, batch), batch["attention_mask"])
    loss = (pooled**2).sum()
    loss.backward()
    return loss.detach(), {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def _assert_same_grads(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        if want[name] is None:  # e.g. BERT's pooler: unused by the loss on both paths
            assert got[name] is None or not got[name].any(), name
        else:
            torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("arch", ARCHS)
def test_supported_architectures(arch):
    assert supports_packing(_model(arch))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("left", [False, True])
def test_hidden_states_equal_padded_forward(arch, left):
    model = _model(arch, dropout=0.1).eval()
    batch = _batch(model, left=left)
    with torch.no_grad():
        want, got = _reference(model, batch), _packed(model, batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)
    assert not got[~real].any()  # padded positions are zeros


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_equal_padded_forward(arch):
    model = _model(arch).train()  # dropout probabilities are 0, so train mode is deterministic
    batch = _batch(model)
    want_loss, want = _loss_and_grads(model, _reference, batch)
    got_loss, got = _loss_and_grads(model, _packed, batch)
    torch.testing.assert_close(got_loss, want_loss, atol=1e-5, rtol=1e-6)
    _assert_same_grads(got, want)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_gradient_checkpointing_same_values_and_gradients(arch, monkeypatch):
    model = _model(arch).train()
    batch = _batch(model)
    want_loss, want = _loss_and_grads(model, _reference, batch)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    calls = []

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(packed, "checkpoint", counting_checkpoint)
    got_loss, got = _loss_and_grads(model, _packed, batch)
    assert len(calls) == 2  # one checkpoint per layer
    torch.testing.assert_close(got_loss, want_loss, atol=1e-5, rtol=1e-6)
    _assert_same_grads(got, want)


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_bf16_autocast_close_to_fp32(arch):
    model = _model(arch).eval()
    batch = _batch(model)
    with torch.no_grad():
        want = _mean_pool(_reference(model, batch), batch["attention_mask"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = _packed(model, batch)
        got = _mean_pool(hidden, batch["attention_mask"])
    (got.float() ** 2).sum().backward()  # the backward pass runs under mixed precision too
    cosine = torch.nn.functional.cosine_similarity(got.float(), want, dim=-1)
    assert cosine.min() >= 0.999
    assert all(p.grad is not None for p in model.embeddings.parameters())


def _dropout_site(name: str) -> str:
    """Which kind of dropout an nn.Dropout module of a BERT-family model is, from its name."""
    if name.startswith("embeddings."):
        return "embeddings"
    if name.endswith(("attention.self.dropout", "attention.dropout")):
        return "attention"  # applied to the attention probabilities
    return "hidden"  # after the attention output projection / the feed-forward


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
@pytest.mark.parametrize("site", ["embeddings", "attention", "hidden"])
def test_dropout_active_in_training(arch, site):
    """Dropout at each site alone (the others at p=0) makes two training forwards differ; eval is exact."""
    model = _model(arch).train()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.3 if _dropout_site(name) == site else 0.0
    batch = _batch(model)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        first, second = _packed(model, batch)[real], _packed(model, batch)[real]
        assert not torch.allclose(first, second)
        model.eval()
        torch.testing.assert_close(_packed(model, batch)[real], _reference(model, batch)[real], atol=1e-5, rtol=0)


def test_unsupported_models_are_refused():
    gpt2 = GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100, n_positions=32))
    assert not supports_packing(gpt2)
    relative = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, position_embedding_type="relative_key")
    assert not supports_packing(BertModel(relative))
    decoder = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, is_decoder=True)
    assert not supports_packing(BertModel(decoder))
    assert not supports_packing(torch.nn.Linear(2, 2))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_cuda_fp32_and_bf16(arch):
    model = _model(arch).cuda().eval()
    batch = {k: v.cuda() for k, v in _batch(model).items()}
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        want = _reference(model, batch)
        torch.testing.assert_close(_packed(model, batch)[real], want[real], atol=1e-4, rtol=0)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = _mean_pool(_packed(model, batch), batch["attention_mask"]).float()
    cosine = torch.nn.functional.cosine_similarity(got, _mean_pool(want, batch["attention_mask"]), dim=-1)
    assert cosine.min() >= 0.999
