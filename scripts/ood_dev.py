"""An out-of-domain dev check for SciFact-trained models, made without the DL19 test queries: the 42 MS MARCO
dev/small queries whose judged passage is in the DL19 pool (data/msmarco-dev-small/pool_dev_*.tsv), ranked
over the pool's 30,005 passages. The queries are not DL19 topics; they are also left out of
`anchor_queries.tsv`, so an anchor term never saw them.

    python scripts/ood_dev.py MODEL [MODEL ...] [--out FILE]     # exports (shared or query/ + passage/) or names

42 queries with one judged passage each is a coarse guard (a query moves nDCG@10 by up to 1/42), meant to
catch a model that forgets MS MARCO questions, not to rank close models.

`--triples data/msmarco-triples-sample/triples.tsv` adds a second set: 100 MS MARCO training queries
(`query<TAB>positive<TAB>negative`), each triple's positive judged relevant, its positive and negative added
to the pool's passages (a text already in the pool keeps its pid).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dr.config import CONFIG_DIR, data_dir, register_resolvers
from dr.data.sources import RetrievalSet, msmarco_set
from dr.encoding.cache import EmbeddingCache
from dr.eval.evaluator import Evaluator
from dr.models.standin import build_encoder
from dr.retrievers.dense import DenseRetriever


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--triples", type=Path, default=None, help="MS MARCO triples with text, a second set")
    a = ap.parse_args()
    register_resolvers()
    root = Path(data_dir())
    dev = msmarco_set("msmarco-pool-dev", str(root / "msmarco-dl19-pool" / "collection.tsv"),
                      str(root / "msmarco-dev-small" / "pool_dev_queries.tsv"),
                      str(root / "msmarco-dev-small" / "pool_dev_qrels.tsv"), layout="pid_text",
                      missing_docs="keep")  # a query's other judged passages may lie outside the pool
    sets = [dev]
    work = tempfile.TemporaryDirectory() if a.triples else None  # the triples set's files, removed at exit
    if work is not None:
        sets.append(triples_set(root / "msmarco-dl19-pool" / "collection.tsv", a.triples, Path(work.name)))
    rows = []
    for model in a.models:
        separate = (Path(model) / "query").is_dir()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("evaluate", overrides=[f"model.name_or_path={model}", f"model.shared={not separate}",
                                                 "model.show_progress=false"])
        encoder = build_encoder(instantiate(cfg.model, _convert_="all"))
        cache = EmbeddingCache(Path(cfg.cache_dir) / "embeddings", dtype=cfg.cache_dtype)
        for eval_set in sets:
            start = time.perf_counter()
            _, metrics = Evaluator(measures=list(cfg.measures), depth=100).evaluate_set(
                DenseRetriever(encoder, cache=cache), eval_set)
            rows.append({"model": model, **({"set": eval_set.name} if a.triples else {}),
                         **{k: round(v, 4) for k, v in metrics.items()}, "wall_s": round(time.perf_counter() - start, 1)})
            print(json.dumps(rows[-1]), flush=True)
    if a.out:
        name = "msmarco-pool-dev (42 queries, DL19 pool)" + (
            "; msmarco-triples (100 training queries, DL19 pool + the triples' passages)" if a.triples else "")
        a.out.write_text(json.dumps({"set": name, "rows": rows}, indent=1) + "\n")


def triples_set(pool: Path, triples: Path, work: Path) -> RetrievalSet:
    """The triples' queries over the pool plus their passages, written to `work` as MS MARCO files. A row
    without exactly three TAB-separated fields raises, naming file and line."""
    pid_of = {}
    with open(pool, encoding="utf-8") as f:
        for line in f:
            pid, text = line.rstrip("\n").split("\t", 1)
            pid_of.setdefault(text.strip(), pid)
    extra: dict[str, str] = {}
    queries, qrels = [], []
    with open(triples, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3 or not all(x.strip() for x in fields):
                raise ValueError(f"{triples}:{number}: expected query<TAB>positive<TAB>negative")
            query, positive, negative = (x.strip() for x in fields)
            for text in (positive, negative):
                if text not in pid_of:
                    pid_of[text] = extra[text] = f"triple-{len(extra)}"
            queries.append(f"t{number}\t{query}\n")
            qrels.append(f"t{number}\t0\t{pid_of[positive]}\t1\n")
    collection = work / "collection.tsv"
    with open(collection, "w", encoding="utf-8") as out:
        out.write(pool.read_text(encoding="utf-8"))
        out.writelines(f"{pid}\t{text}\n" for text, pid in extra.items())
    (work / "queries.tsv").write_text("".join(queries), encoding="utf-8")
    (work / "qrels.tsv").write_text("".join(qrels), encoding="utf-8")
    return msmarco_set("msmarco-triples", str(collection), str(work / "queries.tsv"), str(work / "qrels.tsv"),
                       layout="pid_text")


if __name__ == "__main__":
    main()
