"""objective=query_distill: the student query tower against the teacher's fixed passage index."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from dr.losses.distill import query_distill_loss


def test_query_distill_loss_reduces_to_its_terms():
    torch.manual_seed(0)
    s, t, p = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 5, 4)
    total, mse, kl = query_distill_loss(s, t, p, 0.5, mse_weight=2.0, rank_weight=0.0)
    assert float(total) == pytest.approx(2 * float(((s - t) ** 2).sum(-1).mean()))
    _, _, kl_same = query_distill_loss(t, t, p, 0.5)
    assert float(kl_same) == pytest.approx(0.0, abs=1e-6) and float(kl) > 0


def test_query_distill_run_cuts_the_query_tower_and_exports_student_and_teacher(tiny_model, train_data_dir,
                                                                                tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
    from test_train_app import train

    run = tmp_path / "run"
    extra = tmp_path / "log.tsv"
    extra.write_text("".join(f"x{i}\tunlabeled question {i} about fish\n" for i in range(5)))
    proc = train(["+experiment=query_distill", "objective.student_layers=1", "trainer.max_steps=3",
                  f"objective.extra_queries={extra}", "objective.extra_per_step=2",
                  "trainer.eval_every=0", f"model.name_or_path={tiny_model}", "model.show_progress=false",
                  "model.pooling=mean", "model.passage_max_length=32", "trainer.batch_size=4",
                  "trainer.dev_queries=4", "trainer.tensorboard=false", f"hydra.run.dir={run}"],
                 train_data_dir, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-4000:]
    logs = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert len(logs) == 3 and all(np.isfinite(r["train_mse"]) and r["train_kl"] >= 0 for r in logs)
    query = json.loads((run / "export" / "query" / "config.json").read_text())
    passage = json.loads((run / "export" / "passage" / "config.json").read_text())
    assert (query["num_hidden_layers"], passage["num_hidden_layers"]) == (1, 2)
    # the passage tower is the teacher's, unchanged
    from transformers import AutoModel

    teacher, exported = AutoModel.from_pretrained(tiny_model), AutoModel.from_pretrained(run / "export" / "passage")
    for (name, a), (_, b) in zip(teacher.named_parameters(), exported.named_parameters()):
        assert torch.equal(a, b), name
    st = SentenceTransformer(str(run / "export" / "query"), device="cpu")
    assert st.encode(["goldfish ponds"]).shape == (1, 32)
    assert "scifact-test" in json.loads((run / "metrics.json").read_text())


def test_extra_queries_are_drawn_per_batch_as_a_pure_function(tiny_model):
    from dr.data.groups import Group
    from dr.models.dual_encoder import DualEncoder, EncoderConfig
    from dr.objectives.query_distill import QueryDistillObjective

    enc = DualEncoder(EncoderConfig(str(tiny_model), shared=False, show_progress=False))
    teacher, passages = np.zeros((2 + 4, 32), np.float32), np.zeros((3, 32), np.float32)
    obj = QueryDistillObjective(enc, passages, {"a": 0, "b": 1}, teacher, np.zeros((6, 3), np.int64), 0.05, 1.0,
                                1.0, extra=["e0", "e1", "e2", "e3"], extra_per_step=2, seed=7)
    groups = [Group("a", "query a", ()), Group("b", "query b", ())]
    first, again = obj.batch(groups), obj.batch(groups)
    assert first == again and first["queries"][:2] == ["query a", "query b"] and len(first["rows"]) == 4
    assert all(obj.extra[r - 2] == q for q, r in zip(first["queries"][2:], first["rows"][2:]))
