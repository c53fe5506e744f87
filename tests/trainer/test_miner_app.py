"""`+experiment=ance|star|adore` on the tiny model: refresh schedule, checkpointed negatives, resume,
and ADORE's frozen passage tower."""
from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import load_file

from tests.trainer.test_train_app import base_args, losses, train


def refreshes(run_dir):
    path = run_dir / "refresh.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_ance_refreshes_on_schedule_and_resume_keeps_negatives(tiny_model, train_data_dir, tmp_path):
    common = ["+experiment=ance", "trainer.max_steps=5", "miner.refresh_every=2", "miner.depth=20",
              "miner.window=[0,20]", "miner.per_query=5", "miner.passage_max_length=24", "test_sets=[scifact-test]"]
    straight = tmp_path / "straight"
    proc = train([*common, "trainer.save_every=3", "trainer.keep_checkpoints=5", *base_args(tiny_model, straight)],
                 train_data_dir, tmp_path / "c1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = refreshes(straight)
    assert [r["step"] for r in log] == [0, 2, 4] and [r["version"] for r in log] == [1, 2, 3]
    assert all(r["passages"] > 0 and r["encode_s"] > 0 for r in log[1:])
    train_log = [json.loads(x) for x in (straight / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in train_log if "refresh_total_s" in x] == [1, 3, 5]
    timings = json.loads((straight / "timings.json").read_text())
    assert timings["refreshes"] == 3 and 0 < timings["refresh_fraction_of_training"] < 1
    assert timings["embedding_cache_reused"] == 0  # a fresh cache: everything encoded by this run
    ckpt = straight / "checkpoints" / "step-3"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["negatives_version"] == 2 and state["negatives_step"] == 2
    assert (ckpt / "negatives.tsv").read_text().strip()
    # resume at step 3: negatives of version 2 come back, the step-4 refresh happens, losses match
    resumed = tmp_path / "resumed"
    proc = train([*common, f"resume={ckpt}", *base_args(tiny_model, resumed)], train_data_dir, tmp_path / "c2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert [r["step"] for r in refreshes(resumed)] == [4]
    np.testing.assert_allclose(losses(resumed), losses(straight)[3:], atol=1e-5, rtol=0)


def test_star_mines_once_with_a_fixed_warmup_model(tiny_model, train_data_dir, tmp_path):
    run = tmp_path / "run"
    proc = train(["+experiment=star", "trainer.max_steps=3", f"miner.model={tiny_model}", "miner.depth=20",
                  "miner.window=[0,20]", "miner.per_query=5", *base_args(tiny_model, run)],
                 train_data_dir, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert [r["step"] for r in refreshes(run)] == [0]
    assert json.loads((run / "metrics.json").read_text()).keys() >= {"scifact-test"}


def test_adore_trains_only_the_query_tower(tiny_model, train_data_dir, tmp_path):
    run = tmp_path / "run"
    proc = train(["+experiment=adore", "trainer.max_steps=3", "trainer.batch_size=4", "trainer.eval_every=0",
                  "trainer.save_every=0", "objective.depth=10", *base_args(tiny_model, run)],
                 train_data_dir, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(losses(run)) == 3 and all(np.isfinite(losses(run)))
    start = load_file(str(tiny_model / "model.safetensors"))
    query = load_file(str(run / "export" / "query" / "model.safetensors"))
    passage = load_file(str(run / "export" / "passage" / "model.safetensors"))
    changed = lambda tower: any(not np.array_equal(tower[k], start[k]) for k in start if k in tower)
    assert changed(query) and not changed(passage)


def test_negative_aware_batches_and_memory_with_a_miner_resume_exactly(tiny_model, train_data_dir, tmp_path):
    """sampler=ngame re-clusters the queries at each refresh (the clusters go into the checkpoint) and the
    cross-batch memory is in the checkpointed state: a run resumed at step 3 takes the same steps."""
    common = ["+experiment=ance", "sampler=ngame", "loss.in_batch=true", "objective.memory_size=16",
              "objective.memory_max_age=2", "trainer.max_steps=5", "miner.refresh_every=2", "miner.depth=20",
              "miner.window=[0,20]", "miner.per_query=5", "miner.passage_max_length=24", "test_sets=[]",
              "trainer.eval_every=0"]
    straight = tmp_path / "straight"
    proc = train([*common, "trainer.save_every=3", "trainer.keep_checkpoints=5", *base_args(tiny_model, straight)],
                 train_data_dir, tmp_path / "c1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = json.loads((straight / "checkpoints" / "step-3" / "trainer_state.json").read_text())
    assert state["clusters"] and len(set(state["clusters"])) > 1  # the clusters of the step-2 refresh
    train_log = [json.loads(x) for x in (straight / "train_log.jsonl").read_text().splitlines()]
    assert train_log[0]["memory_negatives"] == 0 and train_log[1]["memory_negatives"] > 0
    resumed = tmp_path / "resumed"
    proc = train([*common, f"resume={straight / 'checkpoints' / 'step-3'}", *base_args(tiny_model, resumed)],
                 train_data_dir, tmp_path / "c2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    np.testing.assert_allclose(losses(resumed), losses(straight)[3:], atol=1e-5, rtol=0)


def test_ance_with_the_fusion_teacher_filter_and_denoising_reports_each_filter(tiny_model, train_data_dir,
                                                                             tmp_path):
    common = ["+experiment=ance", "trainer.max_steps=2", "miner.refresh_every=1", "miner.depth=20",
              "miner.window=[0,20]", "miner.per_query=5", "miner.passage_max_length=24", "test_sets=[scifact-test]",
              "miner.fn_teacher=fusion", "miner.fn_teacher_depth=5"]
    run = tmp_path / "filter"
    proc = train([*common, "miner.fn_teacher_above_positive=true", "miner.fn_fraction=0.99",
                  *base_args(tiny_model, run)], train_data_dir, tmp_path / "c1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = refreshes(run)
    assert len(log) == 2 and all(set(r["filtered_by"]) == {"positive_fraction", "positive_margin",
                                                            "teacher_threshold", "teacher_above_positive"} for r in log)
    assert all(r["filtered"] == sum(r["filtered_by"].values()) <= r["candidates"] for r in log)
    assert log[0]["teacher_pairs"] > 0 and log[1]["teacher_pairs"] <= log[0]["teacher_pairs"]
    assert "candidates dropped as false negatives" in (run / "train.log").read_text()
    run = tmp_path / "denoise"
    proc = train([*common, "miner.denoise=true", *base_args(tiny_model, run)], train_data_dir, tmp_path / "c2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert all(r["filtered"] == 0 and 0 < r["denoise_mean_weight"] < 1 for r in refreshes(run))
