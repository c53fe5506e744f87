"""scripts/select_1se.py: the one-standard-error rule over run directories."""
from __future__ import annotations

import doctest
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("_script_select_1se", ROOT / "scripts" / "select_1se.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(path: Path, dev_curve: list[float], per_query: list[float]) -> Path:
    path.mkdir(parents=True)
    lines = [{"step": 100 * (i + 1), "tag": "dev", "metrics": {"d": {"nDCG@10": v, "RR@10": v}}}
             for i, v in enumerate(dev_curve)]
    lines.append({"step": 100 * len(dev_curve), "tag": "test", "metrics": {"t": {"nDCG@10": 0.99}}})
    (path / "eval_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    (path / "perquery").mkdir()
    rows = [f"q{i}\tnDCG@10\t{v}\n" for i, v in enumerate(per_query)] + ["q0\tRR@10\t0.0\n"]
    (path / "perquery" / "d.tsv").write_text("qid\tmeasure\tvalue\n" + "".join(rows), encoding="utf-8")
    return path


def test_doctests():
    failures, attempted = doctest.testmod(load(), verbose=False)
    assert attempted >= 3 and failures == 0


def test_rule_over_run_directories(tmp_path, monkeypatch, capsys):
    module = load()
    # best dev 0.85 (run a, its best step; the test row is ignored), per-query SE = 0.2887 / 2: line 0.7057
    a = fake_run(tmp_path / "a", [0.80, 0.85, 0.84], [0.5, 1.0, 1.0, 0.5])
    b = fake_run(tmp_path / "b", [0.72, 0.75], [0.0] * 4)
    c = fake_run(tmp_path / "c", [0.70], [0.0] * 4)  # below the line: the scan stops
    d = fake_run(tmp_path / "d", [0.80], [0.0] * 4)  # above it again, but after a run below: not reached
    out = tmp_path / "sel.json"
    monkeypatch.setattr("sys.argv", ["select_1se.py", str(a), str(b), str(c), str(d), "--out", str(out)])
    module.main()
    chosen = json.loads(out.read_text())
    assert chosen["best"] == str(a) and chosen["chosen"] == str(b) and chosen["line"] == pytest.approx(0.7057)
    assert [r["dev"] for r in chosen["rows"]] == [0.85, 0.75, 0.70, 0.80] and chosen["rows"][0]["step"] == 200
    assert "chosen" in capsys.readouterr().out
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "eval_log.jsonl").write_text('{"step": 1, "tag": "test", "metrics": {}}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="no dev evaluation"):
        module.dev_figure(tmp_path / "e", "nDCG@10")
