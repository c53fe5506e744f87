"""`+experiment=ar2` on the tiny model (retriever and ranker both start from it): phases and refreshes
at the configured steps, both models exported and usable by `dr.evaluate retriever=rerank_dense`,
resume equal to a straight run, and clear errors for wrong combinations."""
from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import load_file

from test_tas_app import run_module
from test_train_app import base_args, losses, train


def ar2_args(model, run_dir) -> list[str]:
    # iterations of 1 ranker + 2 retriever steps, the index refreshed before steps 0 and 3
    return ["+experiment=ar2", f"ranker.name_or_path={model}", "ranker.show_progress=false", "ranker.max_length=48",
            "objective.phase_steps=1", "objective.retriever_phase_steps=2", "objective.ranker_lr=1e-3",
            "miner.refresh_every=3", "miner.depth=20", "miner.window=[0,20]", "miner.per_query=5",
            "miner.passage_max_length=24", "trainer.max_steps=6", "trainer.batch_size=4",
            "trainer.negatives_per_query=2", "test_sets=[scifact-test]", *base_args(model, run_dir)]


def logged(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]


def refresh_steps(run_dir) -> list[int]:
    path = run_dir / "refresh.jsonl"
    return [json.loads(x)["step"] for x in path.read_text().splitlines()] if path.exists() else []


def test_ar2_phases_refreshes_exports_rerank_and_resume(tiny_model, train_data_dir, tmp_path):
    straight = tmp_path / "straight"
    proc = train([*ar2_args(tiny_model, straight), "trainer.save_every=2", "trainer.keep_checkpoints=5"],
                 train_data_dir, tmp_path / "c1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = logged(straight)
    assert [x["ranker_phase"] for x in log] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert all("loss_adv" in x and "loss_distill" in x for x in log if not x["ranker_phase"])
    assert refresh_steps(straight) == [0, 3]
    assert all(np.isfinite(losses(straight)))

    # both models in the checkpoint; the retriever exported as before, the ranker in HF layout beside it
    ckpt = load_file(str(straight / "checkpoints" / "step-4" / "model.safetensors"))
    assert any(k.startswith("retriever.") for k in ckpt) and any(k.startswith("ranker.") for k in ckpt)
    export = straight / "export"
    start = load_file(str(tiny_model / "model.safetensors"))
    retriever = load_file(str(export / "model.safetensors"))
    ranker = load_file(str(export / "ranker" / "model.safetensors"))
    assert (export / "ranker" / "dr_ranker.json").exists() and (export / "ranker" / "tokenizer.json").exists()
    key = "embeddings.word_embeddings.weight"
    assert not np.array_equal(retriever[key], start[key]) and not np.array_equal(ranker[f"bert.{key}"], start[key])
    assert "scifact-test" in json.loads((straight / "metrics.json").read_text())

    # the exported ranker reranks the exported retriever's top 3
    rerank = tmp_path / "rerank"
    proc = run_module("dr.evaluate", ["retriever=rerank_dense", "retriever.depth=3", f"model.name_or_path={export}",
                                      "model.pooling=mean", "model.show_progress=false",
                                      f"ranker.name_or_path={export / 'ranker'}", "ranker.show_progress=false",
                                      "eval_sets=[scifact-test]", f"hydra.run.dir={rerank}"],
                      train_data_dir, tmp_path / "c1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "scifact-test" in json.loads((rerank / "metrics.json").read_text())

    # resume at step 2 (a retriever phase): both models, both optimizer states and the step-0 negatives
    # come back, the step-3 refresh happens with the restored retriever, the losses match
    resumed = tmp_path / "resumed"
    proc = train([*ar2_args(tiny_model, resumed), f"resume={straight / 'checkpoints' / 'step-2'}"],
                 train_data_dir, tmp_path / "c2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert refresh_steps(resumed) == [3]
    assert [x["ranker_phase"] for x in logged(resumed)] == [0.0, 1.0, 0.0, 0.0]
    np.testing.assert_allclose(losses(resumed), losses(straight)[2:], atol=1e-5, rtol=0)
