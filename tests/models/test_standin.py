"""The stand-in encoder used by the scale measurements: deterministic, unit norm, lexical, and usable by
`dr.evaluate` through `model=standin`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from dr.models.standin import StandinConfig, build_encoder


def test_deterministic_unit_norm_and_lexical():
    texts = ["goldfish grow in ponds", "wifi is a wireless network", "goldfish ponds and koi", ""]
    a = build_encoder(StandinConfig(dim=64)).encode_passages(texts)
    b = build_encoder(StandinConfig(dim=64)).encode_passages(texts)
    np.testing.assert_array_equal(a, b)  # a fresh instance: the same table, the same vectors
    np.testing.assert_allclose(np.linalg.norm(a[:3], axis=1), 1.0, rtol=1e-5)
    assert (a[3] == 0).all()  # no tokens, no direction
    sims = a @ a.T
    assert sims[0, 2] > 0.4 > abs(sims[0, 1])  # shared words make texts close
    other = build_encoder(StandinConfig(dim=64, seed=1))
    assert other.identity("passage") != build_encoder(StandinConfig(dim=64)).identity("passage")


def test_evaluate_with_the_standin_model(tiny_data_dir, tmp_path):
    out = tmp_path / "eval"
    env = {**os.environ, "DR_DATA_DIR": str(tiny_data_dir), "DR_CACHE": str(tmp_path / "c"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "dr.evaluate", "model=standin", "eval_sets=[scifact-test]",
                           f"hydra.run.dir={out}"], cwd=Path(__file__).resolve().parents[2], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())["scifact-test"]
    assert metrics["RR@10"] > 0.5  # fixture queries share words with their passages
