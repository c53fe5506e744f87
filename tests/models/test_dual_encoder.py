from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from conftest import PASSAGES, QUERIES
from dr.models.dual_encoder import DualEncoder, EncoderConfig


def _encoder(path, **kw) -> DualEncoder:
    kw.setdefault("show_progress", False)
    return DualEncoder(EncoderConfig(name_or_path=str(path), **kw))


def test_encode_matches_one_unsorted_forward(tiny_model):
    """Length-sorted batching must give the same vectors as encoding each text on its own."""
    texts = [f"{t} {x}" for t, x in PASSAGES.values()]
    enc = _encoder(tiny_model, pooling="mean", score="dot", batch_size=3, passage_max_length=16)
    got = enc.encode_passages(texts)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModel.from_pretrained(tiny_model).eval()
    for i, text in enumerate(texts):
        batch = tok([text], truncation=True, max_length=16, return_tensors="pt")
        with torch.no_grad():
            h = model(**batch).last_hidden_state[0]
        np.testing.assert_allclose(got[i], h.mean(0).numpy(), atol=1e-5)


def test_cosine_normalizes_and_cls_takes_first(tiny_model):
    enc = _encoder(tiny_model, pooling="cls", score="cosine")
    q = enc.encode_queries(list(QUERIES.values()))
    assert q.shape == (4, 32) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)


def test_query_and_passage_lengths_differ(tiny_model):
    long_text = " ".join(["goldfish grow in ponds"] * 20)
    enc = _encoder(tiny_model, pooling="mean", score="dot", query_max_length=4, passage_max_length=64)
    q, p = enc.encode_queries([long_text]), enc.encode_passages([long_text])
    assert not np.allclose(q, p)
    assert enc.tokenize("query", [long_text])["input_ids"].shape[1] == 4


def test_auto_reads_sentence_transformers_layout(tiny_model):
    enc = _encoder(tiny_model)  # no modules.json: CLS + dot
    assert (enc.pooling, enc.score_kind) == ("cls", "dot")


def test_separate_towers_train_independently(tiny_model):
    enc = _encoder(tiny_model, shared=False, pooling="mean", score="dot")
    assert enc.query_model is not enc.passage_model
    with torch.no_grad():
        for p in enc.passage_model.parameters():
            p.add_(0.5)
    text = ["wifi vs bluetooth"]
    assert not np.allclose(enc.encode_queries(text), enc.encode_passages(text))


def test_bad_temperature_is_an_error(tiny_model):
    with pytest.raises(ValueError, match="temperature"):
        _encoder(tiny_model, temperature=0.0)


def test_score_divides_by_temperature(tiny_model):
    enc = _encoder(tiny_model, temperature=0.05)
    q, p = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert torch.allclose(enc.score(q, p), torch.tensor([[220.0, 20.0]]))
