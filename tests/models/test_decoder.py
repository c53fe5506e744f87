"""Decoder-only backbones, prefixes, LoRA and truncated dimensions on tiny models built in code."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from conftest import PASSAGES, QUERIES
from dr.models.cross_encoder import CrossEncoder, CrossEncoderConfig
from dr.models.dual_encoder import DualEncoder, EncoderConfig
from dr.models.export import export_encoder, export_ranker
from dr.models.lora import LoraSettings, trainable_parameters

TEXTS = [f"{t} {x}" for t, x in PASSAGES.values()] + list(QUERIES.values())


def llama(path, **kw) -> DualEncoder:
    kw = {"pooling": "last", "score": "cosine", "query_max_length": 32, "passage_max_length": 48,
          "show_progress": False, "precision": "fp32", **kw}
    return DualEncoder(EncoderConfig(str(path), **kw))


def perturb_adapters(enc: DualEncoder) -> None:
    """LoRA's B starts at zero (the adapter adds nothing); make it count."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)


def test_last_token_pooling_reads_the_appended_eos_under_both_paddings(tiny_llama_dir):
    enc = llama(tiny_llama_dir)
    tok = enc.tokenizer
    ids = tok("goldfish ponds")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id  # BOS kept, EOS appended
    # truncation cuts the text, not the EOS
    assert enc.tokenize("query", ["goldfish " * 100])["input_ids"][0, -1].item() == tok.eos_token_id
    texts = ["goldfish", "why did the us enter world war one", "wifi"]
    with torch.no_grad():  # each text alone, unpadded: the state at its last token (the EOS)
        want = torch.stack([enc.query_model(**enc.tokenize("query", [t])).last_hidden_state[0, -1] for t in texts])
    want = torch.nn.functional.normalize(want, dim=-1)
    for side in ("right", "left"):
        tok.padding_side = side
        batch = enc.tokenize("query", texts)
        mask = batch["attention_mask"]
        assert not mask.all() and bool(mask[0, 0] if side == "right" else mask[0, -1])
        with torch.no_grad():
            got = enc.embed("query", batch)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)  # RoPE: left padding shifts nothing


def test_prefixes_reach_every_encoding_and_round_trip_through_sentence_transformers(tiny_model, tmp_path):
    enc = DualEncoder(EncoderConfig(str(tiny_model), pooling="mean", score="cosine", show_progress=False,
                                    query_prefix="query: ", passage_prefix="passage: ", precision="fp32"))
    plain = DualEncoder(EncoderConfig(str(tiny_model), pooling="mean", score="cosine", show_progress=False,
                                      precision="fp32"))
    np.testing.assert_allclose(enc.encode_queries(TEXTS), plain.encode_queries([f"query: {t}" for t in TEXTS]),
                               atol=1e-6)
    np.testing.assert_allclose(enc.encode_passages(TEXTS), plain.encode_passages([f"passage: {t}" for t in TEXTS]),
                               atol=1e-6)
    assert enc.identity("query") != plain.identity("query")  # cached embeddings do not mix
    assert list(enc.token_lengths("query", ["wifi"])) == list(plain.token_lengths("query", ["query: wifi"]))
    out = export_encoder(enc, tmp_path / "export")
    config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {"query": "query: ", "passage": "passage: "}
    st = SentenceTransformer(str(out), device="cpu")
    assert np.abs(st.encode(TEXTS, prompt_name="query") - enc.encode_queries(TEXTS)).max() < 1e-5
    assert np.abs(st.encode(TEXTS, prompt_name="passage") - enc.encode_passages(TEXTS)).max() < 1e-5
    again = DualEncoder(EncoderConfig(str(out), show_progress=False, precision="fp32"))  # prompts read back
    assert again.prefixes == {"query": "query: ", "passage": "passage: "}


def test_lora_trains_only_adapters_and_the_merged_export_equals_base_plus_adapter(tiny_llama_dir, tmp_path):
    peft = pytest.importorskip("peft")
    # one max length for both towers: sentence-transformers keeps one per model
    enc = llama(tiny_llama_dir, lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                query_prefix="query: ", passage_prefix="passage: ", query_max_length=48)
    assert isinstance(enc.config.lora, LoraSettings)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    n_train, n_total = trainable_parameters(enc)
    # 2 layers x (q 64->64: A 4x64 + B 64x4; v 64->32 with 2 of 4 heads for keys/values: A 4x64 + B 32x4)
    assert n_train == 2 * (4 * (64 + 64) + 4 * (64 + 32)) == 1792
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-2)
    q = enc.embed("query", enc.tokenize("query", list(QUERIES.values())))
    p = enc.embed("passage", enc.tokenize("passage", TEXTS[:4]))
    torch.nn.functional.cross_entropy(q @ p.T / 0.05, torch.arange(4)).backward()
    optimizer.step()
    changed = {n for n, p in enc.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable and any("lora_A" in n for n in changed)
    perturb_adapters(enc)  # B moves slowly from zero; a visible adapter makes the merge check meaningful

    out = export_encoder(enc, tmp_path / "export")
    want_q, want_p = enc.encode_queries(TEXTS), enc.encode_passages(TEXTS)
    st = SentenceTransformer(str(out), device="cpu")
    assert np.abs(st.encode(TEXTS, prompt_name="query") - want_q).max() < 1e-5
    assert np.abs(st.encode(TEXTS, prompt_name="passage") - want_p).max() < 1e-5
    merged = AutoModel.from_pretrained(out)  # a plain LlamaModel, no adapter layers
    assert not any("lora" in n for n, _ in merged.named_parameters())
    # the adapter alone, on the original base, computes the same as the merged export
    base = AutoModel.from_pretrained(tiny_llama_dir)
    adapted = peft.PeftModel.from_pretrained(base, str(out / "adapter"))
    tok = AutoTokenizer.from_pretrained(out)
    batch = tok(["query: goldfish ponds"], return_tensors="pt")
    with torch.no_grad():
        a = adapted(**batch).last_hidden_state
        m = merged(**batch).last_hidden_state
    torch.testing.assert_close(a, m, atol=1e-5, rtol=0)
    # dr reads the export back as a plain model with the same pooling, score and prompts
    again = llama(out, pooling="auto", score="auto", query_max_length=48)
    assert (again.pooling, again.score_kind) == ("last", "cosine")
    np.testing.assert_allclose(again.encode_queries(TEXTS), want_q, atol=1e-5)


def test_lora_on_a_bert_tower_keeps_the_padding_free_path_exact(tiny_model):
    pytest.importorskip("peft")
    enc = DualEncoder(EncoderConfig(str(tiny_model), pooling="mean", score="dot", show_progress=False,
                                    precision="fp32", lora={"r": 2, "alpha": 4}))
    perturb_adapters(enc)
    enc.eval()
    batch = enc.tokenize("passage", TEXTS)
    with torch.no_grad():
        packed = enc.embed("passage", batch)
        enc.config.padding_free = False
        padded = enc.embed("passage", batch)
        enc.config.padding_free = True
        no_adapter = enc.query_model.get_base_model()
        with enc.query_model.disable_adapter():
            plain = enc.embed("passage", batch)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=0)
    assert (packed - plain).abs().max() > 1e-3  # the adapters are in the packed path
    assert no_adapter is not None


def test_cross_encoder_lora_trains_adapters_and_head_and_exports_merged(tiny_model, tmp_path):
    pytest.importorskip("peft")
    ranker = CrossEncoder(CrossEncoderConfig(str(tiny_model), max_length=32, show_progress=False,
                                             precision="fp32", lora={"r": 2, "alpha": 4}))
    trainable = {n for n, p in ranker.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("classifier" in n for n in trainable)
    assert all("lora_" in n or "classifier" in n for n in trainable)
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in ranker.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.2)
    queries, passages = list(QUERIES.values()), TEXTS[:4]
    want = ranker.score(queries, passages)
    out = export_ranker(ranker, tmp_path / "ranker")
    again = CrossEncoder(CrossEncoderConfig(str(out), max_length=32, show_progress=False, precision="fp32"))
    np.testing.assert_allclose(again.score(queries, passages), want, atol=1e-5)
    assert (out / "adapter" / "adapter_config.json").exists()


def test_truncate_dim_keeps_a_renormalized_prefix(tiny_model):
    full = DualEncoder(EncoderConfig(str(tiny_model), pooling="mean", score="cosine", show_progress=False,
                                     precision="fp32"))
    cut = DualEncoder(EncoderConfig(str(tiny_model), pooling="mean", score="cosine", show_progress=False,
                                    precision="fp32", truncate_dim=8))
    assert (full.dim, cut.dim) == (32, 8)
    want = full.encode_passages(TEXTS)[:, :8]
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(cut.encode_passages(TEXTS), want, atol=1e-6)
    assert cut.identity("passage") != full.identity("passage")
    with pytest.raises(ValueError, match="truncate_dim=64"):
        DualEncoder(EncoderConfig(str(tiny_model), truncate_dim=64))


def test_bad_settings_fail_before_loading():
    with pytest.raises(ValueError, match="model.pooling"):
        EncoderConfig("x", pooling="max")
    with pytest.raises(ValueError, match="model.dtype"):
        EncoderConfig("x", dtype="int8")
    with pytest.raises(ValueError, match="unknown keys"):
        EncoderConfig("x", lora={"rank": 8})
    with pytest.raises(ValueError, match="r > 0"):
        EncoderConfig("x", lora={"r": 0})


def test_gradient_checkpointing_under_lora_gives_the_same_adapter_gradients(tiny_llama_dir):
    pytest.importorskip("peft")
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # LoRA's A starts random
        enc = llama(tiny_llama_dir, lora={"r": 4, "alpha": 8})
        perturb_adapters(enc)
        if checkpointing:
            enc.gradient_checkpointing_enable()
        enc.train()  # LLaMA's attention dropout is 0 and the adapters' is 0 here: train mode is deterministic
        q = enc.embed("query", enc.tokenize("query", list(QUERIES.values())))
        p = enc.embed("passage", enc.tokenize("passage", TEXTS[:4]))
        torch.nn.functional.cross_entropy(q @ p.T / 0.05, torch.arange(4)).backward()
        grads.append({n: t.grad.clone() for n, t in enc.named_parameters() if t.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


def test_bf16_weights_and_the_attention_kernel_setting(tiny_llama_dir):
    from dr.models.decoder import attention_kernel

    assert attention_kernel("auto", torch.bfloat16, "cpu") is None  # transformers' default (sdpa) off CUDA
    assert attention_kernel("eager", torch.float32, "cpu") == "eager"
    fp32 = llama(tiny_llama_dir)
    bf16 = llama(tiny_llama_dir, dtype="bfloat16", precision="bf16")
    eager = llama(tiny_llama_dir, attn_implementation="eager")
    assert next(bf16.query_model.parameters()).dtype == torch.bfloat16
    assert eager.query_model.config._attn_implementation == "eager"
    want = fp32.encode_passages(TEXTS)
    np.testing.assert_allclose(eager.encode_passages(TEXTS), want, atol=1e-5)
    got = bf16.encode_passages(TEXTS)
    assert got.dtype == np.float32 and np.abs(got - want).max() < 0.05  # bf16 rounding, same model


def test_lora_on_one_of_two_towers_leaves_the_other_plain(tiny_model):
    pytest.importorskip("peft")
    plain = DualEncoder(EncoderConfig(str(tiny_model), shared=False, show_progress=False))
    enc = DualEncoder(EncoderConfig(str(tiny_model), shared=False, show_progress=False, lora={"r": 2, "alpha": 4},
                                    lora_towers=["query"]))
    assert any("lora_" in n for n, _ in enc.query_model.named_parameters())
    assert not any("lora_" in n for n, _ in enc.passage_model.named_parameters())
    assert enc.identity("passage") == plain.identity("passage")  # its cached corpus embeddings stay valid
    with pytest.raises(ValueError, match="model.shared=false"):
        EncoderConfig("x", lora={"r": 2}, lora_towers=["query"])
    with pytest.raises(ValueError, match="lora_towers"):
        EncoderConfig("x", shared=False, lora_towers=["queries"])


def test_auto_kernel_falls_back_when_the_architecture_refuses_flash_attention(tiny_model, monkeypatch):
    import dr.models.dual_encoder as de

    real = de.AutoModel.from_pretrained

    def picky(path, **kw):
        if kw.get("attn_implementation") == "flash_attention_2":
            raise ValueError("does not support Flash Attention 2.0")
        return real(path, **kw)

    monkeypatch.setattr(de.AutoModel, "from_pretrained", picky)
    model = de._load_model(str(tiny_model), {"attn_implementation": "flash_attention_2"}, auto_kernel=True)
    assert model.config.hidden_size == 32
    with pytest.raises(ValueError, match="Flash Attention"):  # a kernel the user named is not replaced
        de._load_model(str(tiny_model), {"attn_implementation": "flash_attention_2"}, auto_kernel=False)
