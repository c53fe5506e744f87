"""An out-of-domain dev check for SciFact-trained models, made without the DL19 test queries: the 42 MS MARCO
dev/small queries whose judged passage is in the DL19 pool (data/msmarco-dev-small/pool_dev_*.tsv), ranked
over the pool's 30,005 passages. The queries are not DL19 topics; they are also left out of
`anchor_queries.tsv`, so an anchor term never saw them.

    python scripts/ood_dev.py MODEL [MODEL ...] [--out FILE]     # exports (shared or query/ + passage/) or names

42 queries with one judged passage each is a coarse guard (a query moves nDCG@10 by up to 1/42), meant to
catch a model that forgets MS MARCO questions, not to rank close models.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dr.config import CONFIG_DIR, data_dir, register_resolvers
from dr.data.sources import msmarco_set
from dr.encoding.cache import EmbeddingCache
from dr.eval.evaluator import Evaluator
from dr.models.standin import build_encoder
from dr.retrievers.dense import DenseRetriever


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    register_resolvers()
    root = Path(data_dir())
    dev = msmarco_set("msmarco-pool-dev", str(root / "msmarco-dl19-pool" / "collection.tsv"),
                      str(root / "msmarco-dev-small" / "pool_dev_queries.tsv"),
                      str(root / "msmarco-dev-small" / "pool_dev_qrels.tsv"), layout="pid_text",
                      missing_docs="keep")  # a query's other judged passages may lie outside the pool
    rows = []
    for model in a.models:
        separate = (Path(model) / "query").is_dir()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("evaluate", overrides=[f"model.name_or_path={model}", f"model.shared={not separate}",
                                                 "model.show_progress=false"])
        encoder = build_encoder(instantiate(cfg.model, _convert_="all"))
        cache = EmbeddingCache(Path(cfg.cache_dir) / "embeddings", dtype=cfg.cache_dtype)
        start = time.perf_counter()
        _, metrics = Evaluator(measures=list(cfg.measures), depth=100).evaluate_set(
            DenseRetriever(encoder, cache=cache), dev)
        rows.append({"model": model, **{k: round(v, 4) for k, v in metrics.items()},
                     "wall_s": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    if a.out:
        a.out.write_text(json.dumps({"set": "msmarco-pool-dev (42 queries, DL19 pool)", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
