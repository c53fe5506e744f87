"""dr.compare: the table, paired significance on per-query values with known answers, the bar chart."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dr.compare import compare, format_tables, load_run, main, paired, randomization_p, t_test_p
from dr.eval.perquery import read_per_query, write_per_query


def write_run(root: Path, name: str, per_set: dict[str, dict[str, float]]) -> Path:
    """A run dir with metrics.json and perquery/<set>.tsv from `{set: {qid: nDCG@10}}`."""
    run = root / name
    metrics = {}
    for set_name, values in per_set.items():
        write_per_query({"nDCG@10": values}, run / "perquery" / f"{set_name}.tsv")
        metrics[set_name] = {"nDCG@10": float(np.mean(list(values.values()))), "R@100": 0.9}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def synthetic(n: int = 30, seed: int = 1) -> tuple[dict[str, float], dict[str, float]]:
    """A baseline and a run that is better on every one of `n` queries (by 0.05 to 0.3)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.0, 0.7, n)
    better = base + rng.uniform(0.05, 0.3, n)
    return ({f"q{i}": float(v) for i, v in enumerate(base)}, {f"q{i}": float(v) for i, v in enumerate(better)})


def test_randomization_p_enumerates_all_sign_flips_of_a_small_case():
    # differences d = (0.5, 0.1, -0.1), observed sum 0.5. The 8 sign flips give sums
    # +++ .5, -++ -.5, +-+ .3, ++- .7, --+ -.7, -+- -.3, +-- .5, --- -.5: six have |sum| >= .5, so p = 6/8
    x = np.zeros(3)
    assert randomization_p(x, np.array([0.5, 0.1, -0.1])) == pytest.approx(0.75)
    # all of one sign and the largest first: only +++ and --- are as extreme, p = 2/8
    assert randomization_p(x, np.array([0.1, 0.2, 0.4])) == pytest.approx(0.25)


def test_identical_runs_are_not_significant(tmp_path):
    base, _ = synthetic()
    runs = [load_run(write_run(tmp_path, name, {"s": base})) for name in ("a", "b")]
    (c,) = compare(runs)
    assert c.p == {"t": 1.0, "randomization": 1.0} and c.delta == 0.0 and c.queries == 30
    rows = [line for line in format_tables(runs, [c], "nDCG@10").splitlines() if line.startswith("| b |")]
    assert len(rows) == 1 and not {"†", "‡"} & set(rows[0])


def test_a_run_better_on_every_query_is_significant_by_both_tests(tmp_path):
    base, better = synthetic()
    runs = [load_run(write_run(tmp_path, "base", {"s": base})), load_run(write_run(tmp_path, "new", {"s": better}))]
    (c,) = compare(runs, permutations=10_000, seed=0)
    assert c.p["t"] < 1e-6
    assert c.p["randomization"] == pytest.approx(1 / 10_001)  # no random flip is as extreme as the observed
    table = format_tables(runs, [c], "nDCG@10")
    new_row = next(line for line in table.splitlines() if line.startswith("| new |"))
    assert "†‡" in new_row  # the nDCG@10 cell is marked by both tests
    # the tests are paired: the same values matched to the wrong queries give far weaker evidence
    x, y, *_ = paired(base, dict(zip(better, np.random.default_rng(0).permutation(list(better.values())))))
    assert t_test_p(x, y) > 1000 * c.p["t"] and randomization_p(x, y) > 10 * c.p["randomization"]


def test_randomization_test_is_deterministic_and_agrees_with_t_test_on_noise():
    rng = np.random.default_rng(3)
    x, y = rng.uniform(size=200), rng.uniform(size=200)
    p = randomization_p(x, y, permutations=2_000, seed=7)
    assert p == randomization_p(x, y, permutations=2_000, seed=7)
    assert p == pytest.approx(t_test_p(x, y), abs=0.05)


def test_missing_queries_count_as_zero_and_unshared_sets_show_a_dash(tmp_path):
    base = write_run(tmp_path, "base", {"s": {"q1": 0.5, "q2": 0.5, "q3": 0.5}, "only-base": {"q1": 1.0}})
    run = write_run(tmp_path, "run", {"s": {"q1": 0.5, "q2": 0.5}, "only-run": {"q1": 1.0}})
    runs = [load_run(base), load_run(run)]
    (c,) = compare(runs)
    assert (c.eval_set, c.queries, c.missing_base, c.missing_run) == ("s", 3, 0, 1)
    assert c.delta == pytest.approx(-0.5 / 3)
    table = format_tables(runs, [c], "nDCG@10")
    header, _, base_row, run_row = table.splitlines()[:4]
    assert header.startswith("| run | s nDCG@10 | s R@100 | only-base nDCG@10 | only-base R@100 | only-run nDCG@10")
    assert base_row.split(" | ")[-1] == "- |" and run_row.split(" | ")[3] == "-"
    assert "1 missing from run" in table and "counts as 0" in table


def test_cli_prints_the_table_and_writes_the_bar_chart(tmp_path, capsys):
    base, better = synthetic()
    a, b = write_run(tmp_path, "a", {"s": base}), write_run(tmp_path, "b", {"s": better})
    out = tmp_path / "charts" / "cmp.png"
    main([str(a), str(b), "--out", str(out), "--test", "randomization"])
    printed = capsys.readouterr().out
    assert "| b | " in printed and "p (randomization)" in printed and "p (t-test)" not in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_not_a_run_dir_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert f"{tmp_path}: not a run dir (no metrics.json" in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text("{\n oops")
    with pytest.raises(ValueError, match=r"metrics.json:2"):
        load_run(tmp_path)


def test_per_query_file_round_trip_and_bad_line(tmp_path):
    values = {"nDCG@10": {"q 1": 0.25, "q2": 1 / 3}, "RR@10": {"q 1": 1.0, "q2": 0.0}}
    write_per_query(values, tmp_path / "s.tsv")
    assert read_per_query(tmp_path / "s.tsv") == values
    (tmp_path / "bad.tsv").write_text("qid\tmeasure\tvalue\nq1\tnDCG@10\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2"):
        read_per_query(tmp_path / "bad.tsv")
