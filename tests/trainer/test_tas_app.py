"""The teacher pipeline on the tiny model: train a cross-encoder, score candidates with `dr.score`,
rerank with `dr.evaluate retriever=rerank`, and distil with `+experiment=tas_balanced`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dr.data.groups import Group
from dr.data.teacher import TeacherScores, read_teacher_scores
from dr.models.dual_encoder import DualEncoder, EncoderConfig
from dr.objectives.distill import DistillConfig, DistillObjective
from test_train_app import REPO, base_args, train


def run_module(module: str, args: list[str], data_dir: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DR_DATA_DIR": str(data_dir), "DR_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_cross_encoder_score_rerank_and_tas_balanced(tiny_model, train_data_dir, tmp_path):
    cache = tmp_path / "cache"
    ce_run = tmp_path / "ce"
    proc = train(["+experiment=cross_encoder", "trainer.max_steps=2", "trainer.eval_every=0", "trainer.save_every=0",
                  "trainer.batch_size=4", "trainer.dev_queries=4", "trainer.tensorboard=false",
                  f"ranker.name_or_path={tiny_model}", "ranker.show_progress=false", "negatives.window=[0,5]",
                  "objective.rerank_depth=3", f"hydra.run.dir={ce_run}"], train_data_dir, cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    teacher = ce_run / "export"
    assert (teacher / "model.safetensors").exists() and (teacher / "dr_ranker.json").exists()
    assert "scifact-train-dev" in json.loads((ce_run / "metrics.json").read_text())

    scores = tmp_path / "scores.tsv"
    proc = run_module("dr.score", [f"ranker.name_or_path={teacher}", "ranker.show_progress=false",
                                   f"model.name_or_path={tiny_model}", "model.show_progress=false",
                                   "model.pooling=mean", "candidates.bm25=3", "candidates.dense=3", f"out={scores}",
                                   f"hydra.run.dir={tmp_path / 'score'}"], train_data_dir, cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = read_teacher_scores(scores)
    assert len(table.scores) == 36 and all(len(v) <= 7 for v in table.scores.values())  # bm25 3 + dense 3 + pos
    from dr.data.sources import beir_set

    train_set = beir_set("scifact-train", str(train_data_dir / "scifact"), "train")
    assert all(set(train_set.positives(q)) <= set(v) for q, v in table.scores.items())
    assert sum(len(v) for v in table.scores.values()) > 36 * 3

    proc = run_module("dr.evaluate", ["retriever=rerank", "retriever.depth=3", f"ranker.name_or_path={teacher}",
                                      "ranker.show_progress=false", "eval_sets=[scifact-test]",
                                      f"hydra.run.dir={tmp_path / 'rerank'}"], train_data_dir, cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "scifact-test" in json.loads((tmp_path / "rerank" / "metrics.json").read_text())

    run = tmp_path / "tas"
    paper = ["model.shared=true", "teacher.fixed_passages=false", "teacher.loss=margin_mse", "teacher.label_weight=0",
             "teacher.pair_weight=1", "teacher.inbatch_weight=0.75", "teacher.anchor_weight=0",
             "trainer.negatives_per_query=1"]  # its paper line
    proc = train(["+experiment=tas_balanced", "teacher=scifact", "trainer.max_steps=3", f"teacher.scores={scores}",
                  f"teacher.inbatch_model={teacher}", "teacher.inbatch_pairs_per_query=3", "sampler.clusters=4",
                  *paper, *base_args(tiny_model, run)], train_data_dir, cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    logged = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert len(logged) == 3 and all(np.isfinite(x["loss_pair"]) and np.isfinite(x["loss_inbatch"]) for x in logged)
    assert (run / "export" / "model.safetensors").exists()
    assert {"scifact-test", "dl19-pool"} <= set(json.loads((run / "metrics.json").read_text()))


class LengthTeacher:
    def score(self, queries, passages):
        return np.array([float(len(p)) for p in passages], dtype=np.float32)


def test_inbatch_teacher_scores_the_positive_and_k_sampled_others(tiny_model, tiny_data_dir):
    from dr.data.sources import beir_set

    test = beir_set("scifact-test", str(tiny_data_dir / "scifact"), "test")
    ids = [str(x) for x in test.corpus.ids[test.corpus.active_rows]]
    groups = [Group(f"q{i}", f"query {i}", [ids[2 * i], ids[2 * i + 1]], [5.0, 1.0]) for i in range(3)]
    encoder = DualEncoder(EncoderConfig(str(tiny_model), pooling="mean", show_progress=False))
    objective = DistillObjective(encoder, DistillConfig(scores="x", inbatch_pairs_per_query=2), test.corpus,
                                 TeacherScores({}, {}, "x"), LengthTeacher(), seed=0)
    inputs = objective.batch(groups)
    t = inputs["inbatch"].numpy()  # (3, 6)
    texts = test.corpus.texts(test.corpus.rows_of(ids[:6]))
    for i in range(3):
        known = np.flatnonzero(~np.isnan(t[i]))
        assert 2 * i in known  # its positive
        others = [j for j in known if j // 2 != i]
        assert len(others) == 2 and len(known) == 3  # k others, never its own negative
        for j in known:
            assert t[i, j] == len(texts[j])
    again = objective.batch(groups)["inbatch"].numpy()
    np.testing.assert_array_equal(np.isnan(again), np.isnan(t))  # same batch, same sampled cells
    loss, logs = objective(**inputs)
    assert torch.isfinite(loss) and {"loss_pair", "loss_inbatch"} <= set(logs)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_inbatch_from_file_uses_only_scored_pairs(tiny_model, tiny_data_dir):
    from dr.data.sources import beir_set

    test = beir_set("scifact-test", str(tiny_data_dir / "scifact"), "test")
    ids = [str(x) for x in test.corpus.ids[test.corpus.active_rows]]
    groups = [Group("a", "qa", [ids[0], ids[1]], [3.0, 1.0]), Group("b", "qb", [ids[2], ids[3]], [4.0, 0.0])]
    file_scores = TeacherScores({"a": {ids[0]: 3.0, ids[1]: 1.0, ids[3]: 2.0}, "b": {ids[2]: 4.0}}, {}, "x")
    encoder = DualEncoder(EncoderConfig(str(tiny_model), pooling="mean", show_progress=False))
    objective = DistillObjective(encoder, DistillConfig(scores="x"), test.corpus, file_scores, None)
    t = objective.batch(groups)["inbatch"].numpy()
    expected = np.full((2, 4), np.nan, dtype=np.float32)
    expected[0, 0], expected[0, 3], expected[1, 2] = 3.0, 2.0, 4.0
    np.testing.assert_array_equal(t, expected)


def test_fusion_teacher_score_file_and_distillation(tiny_model, train_data_dir, tmp_path):
    """teacher=fusion: `dr.score` writes its scores as a teacher file; `+experiment=tas_balanced teacher=fusion`
    trains with it as both teachers (pairwise and in-batch), no cross-encoder involved."""
    cache = tmp_path / "cache"
    scores = tmp_path / "fusion.tsv"
    proc = run_module("dr.score", ["teacher=fusion", "teacher.k=4", f"model.name_or_path={tiny_model}",
                                   "model.show_progress=false", "model.pooling=mean", "candidates.bm25=3",
                                   "candidates.dense=3", f"out={scores}", f"hydra.run.dir={tmp_path / 'score'}"],
                      train_data_dir, cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = read_teacher_scores(scores)
    assert len(table.scores) == 36 and all(2 <= len(v) <= 7 for v in table.scores.values())
    values = [s for v in table.scores.values() for s in v.values()]
    assert len(set(values)) > 36 and all(np.isfinite(values))  # fused z-scores, not a constant

    run = tmp_path / "tas"  # the main job's recipe: listwise KL + labels + the anchor, the query tower vs fixed passages
    anchors = tmp_path / "anchors.tsv"
    anchors.write_text("".join(f"a{i}\twhat is passage {i} about\n" for i in range(40)), encoding="utf-8")
    proc = train(["+experiment=tas_balanced", "teacher.k=4", "teacher.scale=0.5", "trainer.max_steps=3",
                  "trainer.eval_every=0", "sampler.clusters=4", f"teacher.anchor_queries={anchors}",
                  *base_args(tiny_model, run)], train_data_dir, cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    logged = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert len(logged) == 3 and all(np.isfinite(x["loss_pair"]) and np.isfinite(x["loss_label"]) for x in logged)
    assert all(np.isfinite(x["loss_anchor"]) and x["loss_anchor"] > 0 for x in logged)  # dropout and updates
    assert not any("loss_inbatch" in x for x in logged)
    logs = "".join(p.read_text() for p in run.glob("*.log"))
    assert "teacher fusion(1 x bm25, 1 x dense; zscore over top 4; scale 0.5)" in logs
    export = run / "export"
    assert (export / "query" / "model.safetensors").exists() and (export / "passage" / "model.safetensors").exists()
    from safetensors.torch import load_file

    start = load_file(str(export / "passage" / "model.safetensors"))  # the passage tower did not move
    query = load_file(str(export / "query" / "model.safetensors"))
    assert any(not torch.equal(query[k], start[k]) for k in start)
    from transformers import AutoModel

    tiny = AutoModel.from_pretrained(str(tiny_model)).state_dict()
    assert all(torch.equal(start[k], tiny[k]) for k in start if k in tiny)


def test_label_term_adds_the_contrastive_loss_on_the_labelled_positives(tiny_model, tiny_data_dir):
    import torch.nn.functional as F

    from dr.data.sources import beir_set

    test = beir_set("scifact-test", str(tiny_data_dir / "scifact"), "test")
    ids = [str(x) for x in test.corpus.ids[test.corpus.active_rows]]
    groups = [Group(f"q{i}", f"query {i}", [ids[2 * i], ids[2 * i + 1]], [5.0, 1.0 + i]) for i in range(3)]
    encoder = DualEncoder(EncoderConfig(str(tiny_model), pooling="mean", show_progress=False)).eval()
    base = DistillObjective(encoder, DistillConfig(scores="x", inbatch_weight=0), test.corpus,
                            TeacherScores({}, {}, "x"), None)
    labelled = DistillObjective(encoder, DistillConfig(scores="x", inbatch_weight=0, label_weight=0.5), test.corpus,
                                TeacherScores({}, {}, "x"), None)
    inputs = base.batch(groups)
    with torch.no_grad():
        plain, plain_logs = base(**inputs)
        both, logs = labelled(**inputs)
        q = encoder.embed("query", encoder.tokenize("query", inputs["queries"]))
        p = encoder.embed("passage", encoder.tokenize("passage", inputs["passages"]))
        expected = F.cross_entropy(encoder.score(q, p), torch.tensor([0, 2, 4]))  # positives at columns 0, 2, 4
    assert "loss_label" not in plain_logs and logs["loss_label"] == pytest.approx(float(expected), rel=1e-5)
    assert float(both) == pytest.approx(float(plain) + 0.5 * float(expected), rel=1e-5)
    cfg = DistillConfig(scores="x", inbatch_weight=0, label_weight=0.5, pair_weight=0.0)
    labels_only = DistillObjective(encoder, cfg, test.corpus, TeacherScores({}, {}, "x"), None)
    with torch.no_grad():
        only, only_logs = labels_only(**inputs)
    assert float(only) == pytest.approx(0.5 * float(expected), rel=1e-5)  # pair_weight=0: the teacher term is off
    assert only_logs["loss_pair"] == pytest.approx(plain_logs["loss_pair"], rel=1e-5)  # still logged
    with pytest.raises(ValueError, match="label_weight"):
        DistillConfig(scores="x", label_weight=-1.0)


def test_fixed_passages_train_the_query_tower_against_the_whole_corpus(tiny_model, tiny_data_dir):
    import torch.nn.functional as F

    from dr.data.sources import beir_set

    test = beir_set("scifact-test", str(tiny_data_dir / "scifact"), "test")
    ids = [str(x) for x in test.corpus.ids[test.corpus.active_rows]]
    encoder = DualEncoder(EncoderConfig(str(tiny_model), pooling="mean", show_progress=False, shared=False)).eval()
    fixed = encoder.encode_passages(test.corpus.texts(test.corpus.active_rows))  # (N, H), the starting tower
    groups = [Group(f"q{i}", f"query {i}", [ids[2 * i], ids[2 * i + 1]], [5.0, 1.0 + i]) for i in range(2)]
    positives = {"q0": [ids[0], ids[5]], "q1": [ids[2]]}  # q0 has a second labelled passage
    cfg = DistillConfig(scores="x", inbatch_weight=0, label_weight=1.0, fixed_passages=True)
    objective = DistillObjective(encoder, cfg, test.corpus, TeacherScores({}, {}, "x"), None, fixed=fixed,
                                 positives=positives)
    inputs = objective.batch(groups)
    assert inputs["passages"].tolist() == [0, 1, 2, 3] and inputs["other_positives"].sum() == 1
    assert bool(inputs["other_positives"][0, 5])
    loss, logs = objective(**inputs)
    with torch.no_grad():
        q = encoder.embed("query", encoder.tokenize("query", inputs["queries"]))
        everything = encoder.score(q, torch.from_numpy(fixed))
        everything[0, 5] = float("-inf")
        expected = F.cross_entropy(everything, torch.tensor([0, 2]))
    assert logs["loss_label"] == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in encoder.passage_model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.query_model.parameters())
    shared = DualEncoder(EncoderConfig(str(tiny_model), pooling="mean", show_progress=False))
    with pytest.raises(ValueError, match="model.shared=false"):
        DistillObjective(shared, cfg, test.corpus, TeacherScores({}, {}, "x"), None, fixed=fixed)


def test_anchor_term_is_zero_at_the_start_and_grows_as_the_query_tower_moves(tiny_model, tiny_data_dir, tmp_path):
    from dr.data.sources import beir_set

    test = beir_set("scifact-test", str(tiny_data_dir / "scifact"), "test")
    ids = [str(x) for x in test.corpus.ids[test.corpus.active_rows]]
    anchors = tmp_path / "anchors.tsv"
    anchors.write_text("".join(f"a{i}\twhat is passage {i} about\n" for i in range(10)), encoding="utf-8")
    encoder = DualEncoder(EncoderConfig(str(tiny_model), pooling="mean", show_progress=False, shared=False)).eval()
    fixed = encoder.encode_passages(test.corpus.texts(test.corpus.active_rows))
    cfg = DistillConfig(scores="x", inbatch_weight=0, fixed_passages=True, anchor_queries=str(anchors),
                        anchor_weight=2.0, anchor_per_step=4)
    objective = DistillObjective(encoder, cfg, test.corpus, TeacherScores({}, {}, "x"), None, seed=3, fixed=fixed,
                                 positives={})
    groups = [Group(f"q{i}", f"query {i}", [ids[2 * i], ids[2 * i + 1]], [5.0, 1.0]) for i in range(2)]
    inputs = objective.batch(groups)
    assert len(inputs["anchors"]) == 4 and inputs["anchors"] == objective.batch(groups)["anchors"]  # seeded
    assert len(set(inputs["anchors"])) == 4
    with torch.no_grad():
        assert float(objective.anchor_loss(inputs["anchors"])) == pytest.approx(0.0, abs=1e-10)
        for p in encoder.query_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        moved = float(objective.anchor_loss(inputs["anchors"]))
        plain_loss, _ = DistillObjective(encoder, DistillConfig(scores="x", inbatch_weight=0, fixed_passages=True),
                                         test.corpus, TeacherScores({}, {}, "x"), None, fixed=fixed)(
            **{k: v for k, v in inputs.items() if k != "anchors"})
        loss, logs = objective(**inputs)
    assert moved > 0 and logs["loss_anchor"] == pytest.approx(moved, rel=1e-5)
    assert float(loss) == pytest.approx(float(plain_loss) + 2.0 * moved, rel=1e-5)
    # the target is the starting model without dropout, kept once computed, whatever mode training runs in
    encoder.train()
    fresh = DistillObjective(encoder, cfg, test.corpus, TeacherScores({}, {}, "x"), None, seed=3, fixed=fixed,
                             positives={})
    fresh.anchor_loss(inputs["anchors"])
    assert encoder.passage_model.training
    encoder.eval()
    with torch.no_grad():
        start = encoder.embed("passage", encoder.tokenize("query", inputs["anchors"]))
    assert torch.allclose(torch.stack([fresh.anchor_ref[t] for t in inputs["anchors"]]), start, atol=1e-6)
    with pytest.raises(ValueError, match="anchor_weight needs"):
        DistillConfig(scores="x", anchor_weight=1.0, anchor_queries=str(anchors))  # no fixed_passages
    bad = tmp_path / "bad.tsv"
    bad.write_text("a1\tfine\nno tab here\n", encoding="utf-8")
    with pytest.raises(Exception, match="bad.tsv:2"):
        DistillObjective(encoder, DistillConfig(scores="x", fixed_passages=True, anchor_queries=str(bad),
                                                anchor_weight=1.0), test.corpus, TeacherScores({}, {}, "x"), None,
                         fixed=fixed, positives={})
