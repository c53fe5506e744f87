from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from conftest import PASSAGES, QUERIES
from dr.models.dual_encoder import DualEncoder, EncoderConfig
from dr.models.export import export_encoder

TEXTS = [f"{t} {x}" for t, x in PASSAGES.values()] + list(QUERIES.values())


@pytest.mark.parametrize(("pooling", "score"), [("mean", "cosine"), ("cls", "dot"), ("mean", "dot")])
def test_sentence_transformers_loads_export_with_same_embeddings(tiny_model, tmp_path, pooling, score):
    enc = DualEncoder(EncoderConfig(str(tiny_model), pooling=pooling, score=score, passage_max_length=32,
                                    query_max_length=32, show_progress=False))
    with torch.no_grad():  # make the weights differ from the files we started from
        enc.query_model.embeddings.word_embeddings.weight.mul_(1.5)
    out = export_encoder(enc, tmp_path / "export")
    st = SentenceTransformer(str(out), device="cpu")
    got = st.encode(TEXTS, convert_to_numpy=True, batch_size=5)
    want = enc.encode_passages(TEXTS)
    assert np.abs(got - want).max() < 1e-5
    assert st.max_seq_length == 32
    # plain transformers sees the same (modified) weights, stored as safetensors
    hf = AutoModel.from_pretrained(out)
    assert torch.equal(hf.embeddings.word_embeddings.weight, enc.query_model.embeddings.word_embeddings.weight)
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    assert set(load_file(out / "model.safetensors"))
    # dr reads its own export back with the same pooling/score (auto from the ST layout)
    again = DualEncoder(EncoderConfig(str(out), passage_max_length=32, show_progress=False))
    assert (again.pooling, again.score_kind) == (pooling, score)
    np.testing.assert_allclose(again.encode_passages(TEXTS), want, atol=1e-6)


def test_separate_towers_export_query_and_passage(tiny_model, tmp_path):
    enc = DualEncoder(EncoderConfig(str(tiny_model), shared=False, pooling="mean", score="dot",
                                    query_max_length=8, passage_max_length=48, show_progress=False))
    with torch.no_grad():
        enc.passage_model.embeddings.word_embeddings.weight.add_(0.1)
    out = export_encoder(enc, tmp_path / "export")
    q = SentenceTransformer(str(out / "query"), device="cpu")
    p = SentenceTransformer(str(out / "passage"), device="cpu")
    assert (q.max_seq_length, p.max_seq_length) == (8, 48)
    assert np.abs(q.encode(TEXTS) - enc.encode_queries(TEXTS)).max() < 1e-5
    assert np.abs(p.encode(TEXTS) - enc.encode_passages(TEXTS)).max() < 1e-5
    with pytest.raises(ValueError, match="model.shared=false"):
        DualEncoder(EncoderConfig(str(out), shared=True))
    two = DualEncoder(EncoderConfig(str(out), shared=False, query_max_length=8, passage_max_length=48,
                                    show_progress=False))
    np.testing.assert_allclose(two.encode_passages(TEXTS), enc.encode_passages(TEXTS), atol=1e-6)


def test_export_replaces_old_export_atomically(tiny_model, tmp_path):
    enc = DualEncoder(EncoderConfig(str(tiny_model), show_progress=False))
    out = tmp_path / "export"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    export_encoder(enc, out)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "dr_encoder.json").read_text())["pooling"] == "cls"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]
