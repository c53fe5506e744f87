"""An MS MARCO-shaped synthetic collection for scale measurements, laid out as `data=msmarco` reads it.

Passage lengths (in words) and the vocabulary with its word frequencies are sampled from the real DL-pool
passages shipped in data/msmarco-dl19-pool/collection.tsv. Each query is 3 to 8 words of one passage,
which is its (only) relevant passage. Writes, under OUT:

    msmarco/collection.tsv                 pid<TAB>text, pids 0..N-1
    msmarco/queries.train.tsv, qrels.train.tsv
    msmarco/queries.dev.small.tsv, qrels.dev.small.tsv

    python scripts/synthetic.py OUT --passages 1000000 --train-queries 50000 --dev-queries 6980
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "data" / "msmarco-dl19-pool" / "collection.tsv"


def vocabulary(source: Path = SOURCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(words, their probabilities, passage lengths in words) of the real passages."""
    counts: Counter[str] = Counter()
    lengths = []
    with open(source, encoding="utf-8") as f:
        for line in f:
            words = line.rstrip("\n").split("\t", 1)[-1].split()
            counts.update(words)
            lengths.append(len(words))
    words = np.array(list(counts), dtype=object)
    freq = np.array(list(counts.values()), dtype=np.float64)
    return words, freq / freq.sum(), np.array(lengths, dtype=np.int64)


def write_collection(path: Path, n: int, seed: int, chunk: int = 200_000) -> np.ndarray:
    """Write n passages (pid<TAB>text); returns their lengths in words."""
    words, probs, lengths = vocabulary()
    rng = np.random.default_rng(seed)
    all_lengths = rng.choice(lengths, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, n, chunk):
            lens = all_lengths[start : start + chunk]
            ids = rng.choice(len(words), int(lens.sum()), p=probs)
            tokens = words[ids]
            ends = np.cumsum(lens)
            f.writelines(f"{start + i}\t{' '.join(tokens[e - l : e])}\n" for i, (l, e) in enumerate(zip(lens, ends)))
    return all_lengths


def write_queries(out: Path, name: str, collection: Path, n: int, n_passages: int, seed: int) -> None:
    """n queries of 3-8 consecutive words of a random passage each, and qrels naming that passage."""
    rng = np.random.default_rng(seed)
    targets = np.sort(rng.choice(n_passages, n, replace=n > n_passages))  # distinct unless there are too few
    wanted = set(targets.tolist())  # passages read once each, in file order
    texts: dict[int, str] = {}
    with open(collection, encoding="utf-8") as f:
        for line in f:
            pid, text = line.rstrip("\n").split("\t", 1)
            if int(pid) in wanted:
                texts[int(pid)] = text
    with open(out / f"queries.{name}.tsv", "w") as q, open(out / f"qrels.{name}.tsv", "w") as r:
        for i, pid in enumerate(targets.tolist()):
            words = texts[pid].split()
            size = int(rng.integers(3, 9))
            at = int(rng.integers(0, max(1, len(words) - size + 1)))
            qid = f"{name[:5]}{i}"
            q.write(f"{qid}\t{' '.join(words[at : at + size]) or 'empty'}\n")
            r.write(f"{qid}\t0\t{pid}\t1\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--passages", type=int, default=1_000_000)
    ap.add_argument("--train-queries", type=int, default=50_000)
    ap.add_argument("--dev-queries", type=int, default=6_980)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    start = time.perf_counter()
    base = a.out / "msmarco"
    write_collection(base / "collection.tsv", a.passages, a.seed)
    write_queries(base, "train", base / "collection.tsv", a.train_queries, a.passages, a.seed + 1)
    write_queries(base, "dev.small", base / "collection.tsv", a.dev_queries, a.passages, a.seed + 2)
    record = {"out": str(a.out), "passages": a.passages, "train_queries": a.train_queries,
              "dev_queries": a.dev_queries, "seconds": time.perf_counter() - start,
              "collection_bytes": (base / "collection.tsv").stat().st_size}
    print(json.dumps(record))


if __name__ == "__main__":
    main()
