"""The one-standard-error rule over training runs ordered from least to most regularized (Hastie, Tibshirani
and Friedman, The Elements of Statistical Learning, 7.10): the most regularized run whose dev figure is at
least the best run's minus one standard error of the best run's per-query dev values, scanning upwards and
stopping at the first run below that line.

    python scripts/select_1se.py RUN [RUN ...] [--measure nDCG@10] [--out FILE]

Each RUN is a `dr.train` run directory: its dev figure is the best dev evaluation in eval_log.jsonl (the
step it tested and exported), its per-query values perquery/<dev set>.tsv.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path


def dev_figure(run: Path, measure: str) -> tuple[str, float, int]:
    """(dev set name, best dev value, its step) from a run's eval_log.jsonl."""
    best = None
    with open(run / "eval_log.jsonl", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            row = json.loads(line)
            if row.get("tag") != "dev":
                continue
            for name, metrics in row["metrics"].items():
                if measure not in metrics:
                    raise ValueError(f"{run / 'eval_log.jsonl'}:{number}: no {measure} for {name}")
                if best is None or metrics[measure] > best[1]:
                    best = (name, metrics[measure], row["step"])
    if best is None:
        raise ValueError(f"{run / 'eval_log.jsonl'}: no dev evaluation")
    return best


def per_query(run: Path, dev_set: str, measure: str) -> list[float]:
    path = run / "perquery" / f"{dev_set}.tsv"
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    values = [float(r["value"]) for r in rows if r["measure"] == measure]
    if not values:
        raise ValueError(f"{path}: no {measure} rows")
    return values


def standard_error(values: list[float]) -> float:
    return statistics.stdev(values) / len(values) ** 0.5


def select(figures: list[float], best_values: list[float]) -> tuple[int, float]:
    """(index chosen, the line): figures ordered from least to most regularized.

    >>> select([0.85, 0.83, 0.79], [0.5, 1.0, 1.0, 0.5])  # SE = 0.2887 / 2 = 0.1443
    (2, 0.7057)
    >>> select([0.85, 0.80, 0.84], [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])  # SE 0.5270 / 3: all above
    (2, 0.6743)
    >>> select([0.85, 0.70, 0.84], [0.8, 0.9])  # SE 0.05: 0.70 is below the line, the scan stops there
    (0, 0.8)
    """
    best = max(figures)
    line = round(best - standard_error(best_values), 4)
    chosen = 0
    for i, value in enumerate(figures):
        if value < line:
            break
        chosen = i
    return chosen, line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories, least regularized first")
    ap.add_argument("--measure", default="nDCG@10")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    rows = [dict(zip(("dev_set", "dev", "step"), dev_figure(run, a.measure)), run=str(run)) for run in a.runs]
    best = max(range(len(rows)), key=lambda i: rows[i]["dev"])
    values = per_query(a.runs[best], rows[best]["dev_set"], a.measure)
    chosen, line = select([r["dev"] for r in rows], values)
    se = standard_error(values)
    for i, r in enumerate(rows):
        print(f"{r['run']}\tdev {a.measure} {r['dev']:.4f} (step {r['step']})"
              + ("\tbest" if i == best else "") + ("\tchosen" if i == chosen else ""))
    print(f"SE of the best run's {len(values)} per-query values {se:.4f}; line {line:.4f}; chosen {rows[chosen]['run']}")
    if a.out:
        a.out.write_text(json.dumps({"measure": a.measure, "rows": rows, "best": rows[best]["run"],
                                     "se": round(se, 4), "line": line, "chosen": rows[chosen]["run"]},
                                    indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
