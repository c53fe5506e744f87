"""Does `SentenceTransformer(export)` reproduce dr on an evaluation set? Encodes the set's queries and corpus
with dr (the export read back as dr reads any checkpoint: pooling, score and prompts from its
sentence-transformers files) and with sentence-transformers (prompt_name "query" / "passage" when the export
declares them), then prints the largest embedding difference and both nDCG@10.

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
    from dr.eval.measures import score_run
    from dr.models.dual_encoder import DualEncoder, EncoderConfig

    info = json.loads((a.export / "dr_encoder.json").read_text())
    test = beir_set(a.set, str(a.data_dir / "scifact"), "test")
    docs = test.corpus.texts(test.corpus.active_rows)
    qids = sorted(test.queries)
    queries = [test.queries[q] for q in qids]
    length = info["passage_max_length"]
    enc = DualEncoder(EncoderConfig(str(a.export), precision=a.precision, query_max_length=length,
                                    passage_max_length=length, show_progress=False))
    st = SentenceTransformer(str(a.export), device="cpu")
    prompts = st.prompts or {}
    dr_q, dr_d = enc.encode_queries(queries), enc.encode_passages(docs)
    st_q = st.encode(queries, prompt_name="query" if prompts.get("query") else None, batch_size=32)
    st_d = st.encode(docs, prompt_name="passage" if prompts.get("passage") else None, batch_size=32)

    def ndcg(q: np.ndarray, d: np.ndarray) -> float:
        s = q @ d.T
        run = {qid: {str(test.corpus.ids[j]): float(s[i, j]) for j in np.argsort(-s[i])[:100]}
               for i, qid in enumerate(qids)}
        return score_run(run, test.qrels, ["nDCG@10"])["nDCG@10"]

    out = {"export": str(a.export), "set": a.set, "queries": len(qids), "passages": len(docs),
           "prompts": {k: v for k, v in prompts.items() if v}, "pooling": enc.pooling, "score": enc.score_kind,
           "max_abs_diff_queries": float(np.abs(dr_q - st_q).max()),
           "max_abs_diff_passages": float(np.abs(dr_d - st_d).max()),
           "ndcg@10_dr": ndcg(dr_q, dr_d), "ndcg@10_sentence_transformers": ndcg(st_q, st_d)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
