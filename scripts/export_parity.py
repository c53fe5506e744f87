"""Does `SentenceTransformer(export)` embed exactly as dr does? Encodes an evaluation set's queries and corpus
with dr (the export read back as dr reads any checkpoint: pooling, score and prompts from its
sentence-transformers files) and with sentence-transformers (prompt_name "query" / "passage" when the export
declares them), and prints the largest difference of the embeddings. The retrieval figure of the export in
sentence-transformers, sharing no code with dr, is scripts/independent_eval.py's.

    python scripts/export_parity.py outputs/tiny_llama_lora/export --set scifact-test
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("--set", default="scifact-test", choices=["scifact-test"])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[1] / "data")
    parser.add_argument("--precision", default="fp32", help="dr's encoding precision (sentence-transformers: fp32)")
    a = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    from dr.data.sources import beir_set
    from dr.models.dual_encoder import DualEncoder, EncoderConfig

    info = json.loads((a.export / "dr_encoder.json").read_text())
    test = beir_set(a.set, str(a.data_dir / "scifact"), "test")
    docs = test.corpus.texts(test.corpus.active_rows)
    queries = [test.queries[q] for q in sorted(test.queries)]
    length = info["passage_max_length"]  # sentence-transformers keeps one max length per model
    enc = DualEncoder(EncoderConfig(str(a.export), precision=a.precision, query_max_length=length,
                                    passage_max_length=length, show_progress=False))
    st = SentenceTransformer(str(a.export), device="cpu")
    prompts = st.prompts or {}
    st_q = st.encode(queries, prompt_name="query" if prompts.get("query") else None, batch_size=32)
    st_d = st.encode(docs, prompt_name="passage" if prompts.get("passage") else None, batch_size=32)
    out = {"export": str(a.export), "set": a.set, "queries": len(queries), "passages": len(docs),
           "prompts": {k: v for k, v in prompts.items() if v}, "pooling": enc.pooling, "score": enc.score_kind,
           "max_abs_diff_queries": float(np.abs(enc.encode_queries(queries) - st_q).max()),
           "max_abs_diff_passages": float(np.abs(enc.encode_passages(docs) - st_d).max())}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
