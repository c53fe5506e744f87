"""`python -m dr.train model=tiny_llama`: a decoder-only LoRA run end to end (train, resume, export,
evaluate) on the tiny random LLaMA, and the export reproducing dr's metric in sentence-transformers."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from test_train_app import losses, train

pytest.importorskip("peft")


def llama_args(model, run_dir) -> list[str]:
    return ["model=tiny_llama", f"model.name_or_path={model}", "trainer.lr=1e-3", "trainer.batch_size=4",
            "trainer.dev_queries=4", "trainer.tensorboard=false", "+experiment=bm25_negatives",
            f"hydra.run.dir={run_dir}"]


def test_tiny_llama_lora_run_resumes_exactly_and_its_export_reproduces_in_sentence_transformers(
        tiny_llama_dir, train_data_dir, tmp_path):
    straight, interrupted, resumed = tmp_path / "straight", tmp_path / "interrupted", tmp_path / "resumed"
    proc = train(["trainer.max_steps=4", *llama_args(tiny_llama_dir, straight)], train_data_dir, tmp_path / "c1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    proc = train(["trainer.max_steps=4", "trainer.save_every=2", "trainer.keep_checkpoints=3",
                  *llama_args(tiny_llama_dir, interrupted)], train_data_dir, tmp_path / "c2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    step2 = interrupted / "checkpoints" / "step-2"
    saved = load_file(step2 / "model.safetensors")
    assert any("lora_A" in k for k in saved)  # the checkpoint holds the adapter
    proc = train(["trainer.max_steps=4", f"resume={step2}", *llama_args(tiny_llama_dir, resumed)],
                 train_data_dir, tmp_path / "c3")
    assert proc.returncode == 0, proc.stderr[-4000:]
    np.testing.assert_allclose(losses(resumed), losses(straight)[2:], atol=1e-6, rtol=0)

    export = straight / "export"
    assert (export / "adapter" / "adapter_config.json").exists() and (export / "model.safetensors").exists()
    metrics = json.loads((straight / "metrics.json").read_text())
    from dr.data.sources import beir_set
    from dr.eval.measures import score_run

    test = beir_set("scifact-test", str(train_data_dir / "scifact"), "test")
    docs = test.corpus.texts(test.corpus.active_rows)
    qids = list(test.queries)
    st = SentenceTransformer(str(export), device="cpu")
    d = st.encode(docs, prompt_name="passage")
    q = st.encode([test.queries[x] for x in qids], prompt_name="query")
    s = q @ d.T
    run = {qid: {str(test.corpus.ids[j]): float(s[i, j]) for j in range(len(docs))} for i, qid in enumerate(qids)}
    assert score_run(run, test.qrels, ["nDCG@10"])["nDCG@10"] == pytest.approx(
        metrics["scifact-test"]["nDCG@10"], abs=1e-5)
