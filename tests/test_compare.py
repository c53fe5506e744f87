"""dr.compare: the table, paired significance on per-query values with known answers, the bar chart."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import dr.compare as compare_module
from dr.compare import (SEED_TEST, TESTS, average_runs, compare, format_tables, load_method, load_run, main, paired,
                        randomization_p, t_test_p, welch_p)
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


def _seeds(root: Path, name: str, per_query: dict[str, float], offsets: list[float]) -> list[Path]:
    """Run dirs name/seed-K of one method: the same per-query values shifted by each seed's offset."""
    return [write_run(root / name, f"seed-{k}", {"s": {q: v + off for q, v in per_query.items()}})
            for k, off in enumerate(offsets, start=1)]


def test_average_runs_docstring_example_and_welch():
    import doctest

    failures, attempted = doctest.testmod(compare_module, verbose=False)
    assert failures == 0 and attempted >= 4  # average_runs's example
    # Welch by hand: x = (1, 2, 3), y = (4, 5, 6): means 2 and 5, variances 1 and 1, se = sqrt(1/3 + 1/3),
    # t = 3 / 0.8165 = 3.674 with 4 degrees of freedom, two-sided p = 0.02131
    assert welch_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.02131, abs=1e-4)
    assert welch_p([0.5, 0.5], [0.5, 0.5]) == 1.0 and welch_p([0.5, 0.5], [0.6, 0.6]) == 0.0
    with pytest.raises(ValueError):
        welch_p([0.5], [0.5, 0.6])


def test_a_lucky_seed_passes_the_query_tests_but_not_the_test_over_seeds(tmp_path):
    base, _ = synthetic()
    # the method's three seeds move every query by +0.20, -0.10 and +0.05: averaged over seeds it is +0.05 on
    # every query (the paired tests call that certain), but its seeds spread far more than the baseline's
    base_runs = _seeds(tmp_path, "base", base, [0.0, 0.001, -0.001])
    new_runs = _seeds(tmp_path, "new", base, [0.20, -0.10, 0.05])
    methods = [average_runs([load_run(p) for p in base_runs], "base"),
               average_runs([load_run(p) for p in new_runs], "new")]
    (c,) = compare(methods, tests=(*TESTS, SEED_TEST))
    assert c.delta == pytest.approx(0.05) and c.p["t"] < 1e-6 and c.p["randomization"] < 1e-3
    assert c.p[SEED_TEST] > 0.5  # |0.05| against a seed sd of 0.15 with 3 seeds
    table = format_tables(methods, [c], "nDCG@10", tests=(*TESTS, SEED_TEST))
    row = next(line for line in table.splitlines() if line.startswith("| new |"))
    assert "†‡" in row and "§" not in row and " ± 0.1500" in row
    # the same mean gain with seeds as steady as the baseline's passes all three
    steady = average_runs([load_run(p) for p in _seeds(tmp_path, "steady", base, [0.049, 0.05, 0.051])], "steady")
    (c,) = compare([methods[0], steady], tests=(*TESTS, SEED_TEST))
    assert c.p[SEED_TEST] < 1e-3 and "†‡§" in format_tables([methods[0], steady], [c], "nDCG@10",
                                                          tests=(*TESTS, SEED_TEST))


def test_one_run_on_a_side_has_no_test_over_seeds(tmp_path):
    base, better = synthetic()
    one = load_run(write_run(tmp_path, "base", {"s": base}))
    three = average_runs([load_run(p) for p in _seeds(tmp_path, "new", better, [0.0, 0.01, 0.02])], "new")
    (c,) = compare([one, three], tests=(*TESTS, SEED_TEST))
    assert SEED_TEST not in c.p and "1 run(s) of base, 3 of new" in c.note and c.p["t"] < 1e-6


def test_cli_groups_seeds_by_comma_and_by_seed_dirs(tmp_path, capsys):
    base, better = synthetic()
    for name, values in (("base", base), ("new", better)):
        write_run(tmp_path, name, {"s": values})
        _seeds(tmp_path, name, values, [0.01, -0.01])
    grouped = load_method(str(tmp_path / "new"), seeds=True)
    assert grouped.n_runs == 3 and grouped.name == "new (3 runs)"
    assert [m.path.name for m in grouped.members] == ["new", "seed-1", "seed-2"]
    assert load_method(f"{tmp_path / 'new'},{tmp_path / 'new' / 'seed-1'}").n_runs == 2
    assert load_method(str(tmp_path / "new")).n_runs == 1  # without --seeds the subdirs are not read
    main([str(tmp_path / "base"), str(tmp_path / "new"), "--seeds", "--out", str(tmp_path / "c.png")])
    printed = capsys.readouterr().out
    assert "p (Welch over seeds)" in printed and "| new (3 runs) |" in printed and "mean ± sample sd" in printed
