"""metrics.jsonl from EvalCallback, curves.png from a run's logs, and per-query files from the evaluator."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dr.data.sources import RetrievalSet
from dr.eval.evaluator import Evaluator
from dr.eval.perquery import read_per_query
from dr.report import load_evals, metrics_records, read_jsonl, write_curves
from dr.trainer import callbacks
from dr.trainer.callbacks import EvalCallback
from dr.trainer.checkpoint import TrainState

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}


class StubRetriever:
    """Ranks d1 first for every query: q1 is answered at rank 1, q2 and q3 at rank 2 and 3."""

    name = "stub"
    encoder = None

    def retrieve(self, eval_set: RetrievalSet, depth: int) -> dict[str, dict[str, float]]:
        return {q: {"d1": 3.0, "d2": 2.0, "d3": 1.0} for q in eval_set.queries}


class StubObjective(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(2, 2)


def stub_trainer(step: int = 0, refreshes: list[dict] | None = None) -> SimpleNamespace:
    accelerator = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)
    return SimpleNamespace(accelerator=accelerator, state=TrainState(step=step), objective=StubObjective(),
                           refreshes=refreshes if refreshes is not None else [],
                           config=SimpleNamespace(max_steps=2))


def eval_set(name: str) -> RetrievalSet:
    return RetrievalSet(name, corpus=None, queries={q: q for q in QRELS}, qrels=QRELS)


def test_eval_callback_writes_metrics_jsonl_and_final_per_query_files(tmp_path, monkeypatch):
    monkeypatch.setattr(callbacks, "export_encoder", lambda *args: None)  # no real model to export
    cb = EvalCallback(tmp_path, Evaluator(measures=["RR@10", "nDCG@10"], depth=10), StubRetriever(),
                      eval_set("dev"), [eval_set("test")], every=1, zero_shot=True)
    trainer = stub_trainer(refreshes=[{"total_s": 2.0}, {"total_s": 3.5}])
    cb.on_train_begin(trainer)  # zero-shot: dev and test
    trainer.state.step = 1
    cb.on_step_end(trainer, {})  # dev
    trainer.state.step = 2
    cb.on_train_end(trainer)  # final dev, then test with the selected model

    lines = read_jsonl(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["set"], r["tag"]) for r in lines] == [
        (0, "dev", "zero-shot"), (0, "test", "zero-shot"), (1, "dev", "dev"), (2, "dev", "dev"), (2, "test", "test")]
    for r in lines:
        assert set(r) == {"step", "set", "tag", "measures", "eval_s", "set_s", "elapsed_s", "refreshes", "refresh_s"}
        assert r["measures"]["RR@10"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
        assert r["refreshes"] == 2 and r["refresh_s"] == pytest.approx(5.5)
        assert r["eval_s"] >= r["set_s"] >= 0 and r["elapsed_s"] >= 0
    assert [r["elapsed_s"] for r in lines] == sorted(r["elapsed_s"] for r in lines)

    # per-query values of the final metrics (dev: the dev-best evaluation, step 1) next to metrics.json
    for name in ("dev", "test"):
        values = read_per_query(tmp_path / "perquery" / f"{name}.tsv")
        assert values["RR@10"] == pytest.approx({"q1": 1.0, "q2": 0.5, "q3": 1 / 3})
        final = json.loads((tmp_path / "metrics.json").read_text())[name]
        assert sum(values["nDCG@10"].values()) / 3 == pytest.approx(final["nDCG@10"])
    assert not (tmp_path / "perquery" / ".latest").exists()


def test_metrics_records_without_miner_or_clock():
    records = metrics_records(5, "dev", {"a": {"nDCG@10": 0.5}, "b": {"nDCG@10": 0.25}}, eval_s=1.5)
    assert records == [{"step": 5, "set": "a", "tag": "dev", "measures": {"nDCG@10": 0.5}, "eval_s": 1.5},
                       {"step": 5, "set": "b", "tag": "dev", "measures": {"nDCG@10": 0.25}, "eval_s": 1.5}]


def write_logs(run: Path) -> None:
    run.mkdir()
    evals = [{"step": s, "tag": tag, "metrics": {"dev": {"nDCG@10": 0.3 + 0.01 * s, "R@100": 0.6 + 0.01 * s}},
              "eval_s": 1.0} for s, tag in [(0, "zero-shot"), (5, "dev"), (10, "dev")]]
    evals.append({"step": 10, "tag": "test", "metrics": {"test": {"nDCG@10": 0.41}}, "eval_s": 2.0})
    (run / "eval_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    (run / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 11)))


def test_curves_png_from_eval_and_train_logs(tmp_path):
    run = tmp_path / "run"
    write_logs(run)
    assert [(r["step"], r["set"]) for r in load_evals(run)] == [(0, "dev"), (5, "dev"), (10, "dev"), (10, "test")]
    path = write_curves(run)
    assert path == run / "curves.png"
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 3 * 5 * 120 and height >= 3 * 120  # three panels (dev, test, loss) at dpi >= 120


def test_loss_panel_draws_each_logged_loss_component(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dr import report

    log = [{"step": 1, "loss": 0.4, "loss_ranker": 0.4}, {"step": 2, "loss": 1.5, "loss_adv": 2.6, "loss_distill": 0.4},
           {"step": 3, "lr": 1e-5}]
    fig, ax = plt.subplots()
    report._plot_loss(ax, log)
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    plt.close(fig)
    assert lines == {"loss": ([1, 2], [0.4, 1.5]), "loss_adv": ([2], [2.6]), "loss_distill": ([2], [0.4]),
                     "loss_ranker": ([1], [0.4])}


def test_curves_are_skipped_with_a_warning_when_matplotlib_is_missing(tmp_path, monkeypatch, caplog):
    run = tmp_path / "run"
    write_logs(run)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    assert write_curves(run) is None
    assert "matplotlib is not installed" in caplog.text and not (run / "curves.png").exists()


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "eval_log.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"eval_log.jsonl:2"):
        read_jsonl(path)
    path.write_text('{"step": 1}\n{"step": 2, "lo')  # a run killed mid-write: the last line is dropped
    assert read_jsonl(path) == [{"step": 1}]
