"""A training run's report: `metrics.jsonl` (one line per evaluation and eval set) and `curves.png`
(each measure of each eval set against the step, and the training loss).

    python -m dr.report outputs/train/RUN        # (re)draw RUN/curves.png, e.g. for a run made before this

Reading and writing are plain functions of records; matplotlib is imported only to draw, so a missing
matplotlib costs the picture, never the run.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

METRICS_FILE, CURVES_FILE = "metrics.jsonl", "curves.png"
TAG_MARKERS = {"zero-shot": "s", "dev": "o", "test": "*"}


def metrics_records(step: int, tag: str, metrics: dict[str, dict[str, float]], eval_s: float,
                    set_s: dict[str, float] | None = None, elapsed_s: float | None = None,
                    refreshes: Sequence[dict] | None = None) -> list[dict]:
    """One `metrics.jsonl` record per eval set of one evaluation.

    `eval_s`: the whole evaluation's seconds; `set_s`: each set's retrieval seconds; `elapsed_s`: the
    run's wall time so far; `refreshes`: the miner's refresh records so far (each with `total_s`).
    """
    records = []
    for name, measures in metrics.items():
        record = {"step": step, "set": name, "tag": tag, "measures": measures, "eval_s": eval_s}
        if set_s and name in set_s:
            record["set_s"] = set_s[name]
        if elapsed_s is not None:
            record["elapsed_s"] = elapsed_s
        if refreshes is not None:
            record["refreshes"] = len(refreshes)
            record["refresh_s"] = float(sum(r["total_s"] for r in refreshes))
        records.append(record)
    return records


def append_jsonl(path: str | Path, records: Sequence[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file ([] when it does not exist); a bad line raises ValueError naming
    the file and line, except a truncated last line (a run killed mid-write), which is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if lineno == len(lines):
                logger.warning("%s:%d: skipping a truncated last line", path, lineno)
                continue
            raise ValueError(f"{path}:{lineno}: not a JSON line ({e.msg})") from e
    return records


def load_evals(run_dir: str | Path) -> list[dict]:
    """Flat evaluation records `{step, set, tag, measures}` of a run: from metrics.jsonl, or from
    eval_log.jsonl (`{step, tag, metrics: {set: {measure: value}}}`) for runs made before it existed."""
    run_dir = Path(run_dir)
    records = read_jsonl(run_dir / METRICS_FILE)
    if records:
        return records
    flat = []
    for r in read_jsonl(run_dir / "eval_log.jsonl"):
        flat += metrics_records(r["step"], r["tag"], r["metrics"], r.get("eval_s", 0.0))
    return flat


def plot_curves(evals: Sequence[dict], train_log: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """One panel per eval set (every measure against the step, marker by tag) and one panel with the
    training loss against the step. Raises ImportError when matplotlib is missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(r["set"] for r in evals))
    panels = len(sets) + 1
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    flat_axes = axes.ravel()
    for ax, name in zip(flat_axes, sets):
        _plot_set(ax, [r for r in evals if r["set"] == name], name)
    _plot_loss(flat_axes[len(sets)], train_log)
    for ax in flat_axes[panels:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _plot_set(ax, records: Sequence[dict], name: str) -> None:
    measures = list(dict.fromkeys(m for r in records for m in r["measures"]))
    for i, measure in enumerate(measures):
        color = f"C{i}"
        points = sorted((r["step"], r["measures"][measure], r["tag"]) for r in records if measure in r["measures"])
        ax.plot([p[0] for p in points], [p[1] for p in points], color=color, label=measure)
        for tag, marker in TAG_MARKERS.items():
            tagged = [p for p in points if p[2] == tag]
            ax.scatter([p[0] for p in tagged], [p[1] for p in tagged], color=color, marker=marker,
                       s=80 if marker == "*" else 30, zorder=3)
    tags = list(dict.fromkeys(r["tag"] for r in records))
    for tag in tags:  # marker legend entries in grey, after the measures
        ax.scatter([], [], color="grey", marker=TAG_MARKERS.get(tag, "o"),
                   label="test (selected model)" if tag == "test" else tag)
    ax.set_title(f"{name}")
    _integer_steps(ax)
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")


def _integer_steps(ax) -> None:
    """Steps are whole numbers: no 7.6, 7.8 ... ticks when a run has a single evaluation step."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _plot_loss(ax, train_log: Sequence[dict]) -> None:
    """The total loss, and each logged component (`loss_*`, e.g. AR2's ranker, adversarial and
    distillation terms) as a thinner dashed line."""
    names = ["loss"] + sorted({k for r in train_log for k in r if k.startswith("loss_")})
    plotted = 0
    for i, name in enumerate(names):
        points = [(r["step"], r[name]) for r in train_log if name in r and "step" in r]
        if not points:
            continue
        style = {"color": "C3", "linewidth": 1.2} if name == "loss" else \
            {"color": f"C{4 + i}", "linewidth": 0.9, "linestyle": "--", "marker": "."}
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name, **style)
        plotted += 1
    if not plotted:
        ax.text(0.5, 0.5, "no train_log.jsonl", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("training loss")
    _integer_steps(ax)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(fontsize="small")


def write_curves(run_dir: str | Path) -> Path | None:
    """`run_dir/curves.png` from its eval and train logs; None (with a warning) when matplotlib is
    missing or there is nothing to draw. Never raises for a missing picture: the run is already done."""
    run_dir = Path(run_dir)
    try:
        evals, train_log = load_evals(run_dir), read_jsonl(run_dir / "train_log.jsonl")
        if not evals and not train_log:
            logger.warning("%s has no evaluations and no train_log.jsonl: no %s", run_dir, CURVES_FILE)
            return None
        return plot_curves(evals, train_log, run_dir / CURVES_FILE, title=run_dir.name)
    except ImportError:
        logger.warning("matplotlib is not installed: no %s (pip install matplotlib)", CURVES_FILE)
    except Exception:  # noqa: BLE001 - a finished run must not fail on its picture
        logger.warning("could not draw %s", run_dir / CURVES_FILE, exc_info=True)
    return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dr.report", description="draw curves.png of training runs")
    parser.add_argument("run_dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        if not (run_dir / "eval_log.jsonl").exists() and not (run_dir / METRICS_FILE).exists():
            parser.error(f"{run_dir} is not a training run dir: no eval_log.jsonl or {METRICS_FILE}")
        path = write_curves(run_dir)
        print(f"curves: {path}" if path else f"{run_dir}: no curves drawn (see the warning above)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
