"""scripts/chaos.py with a few kills (30 by hand: `python scripts/chaos.py`): SIGKILLed and resumed tiny
runs end as the uninterrupted run does."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "chaos.py"


def test_killed_and_resumed_runs_match_the_uninterrupted_run(tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("chaos", SCRIPT)
    chaos = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "chaos", chaos)  # dataclasses look their module up while being made
    spec.loader.exec_module(chaos)
    # in this process rather than a subprocess: the fixtures are built with modules pytest already imported
    # 3 kills: each costs a dr.train start-up (~10 s here); seed 5 aims the first at a checkpoint write
    rc = chaos.main(["--kills", "3", "--kills-per-chain", "3", "--max-steps", "6", "--seed", "5",
                     "--workdir", str(tmp_path / "chaos")])
    out = capsys.readouterr().out
    assert "chaos: 3 SIGKILLs" in out, out
    assert "matched the uninterrupted run: yes" in out, out
    assert rc == 0, out
