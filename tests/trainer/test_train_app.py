"""`python -m dr.train` on the tiny model: smoke run, resume equality, clear config errors."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

REPO = Path(__file__).resolve().parents[2]


def train(args: list[str], data_dir: Path, cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "DR_DATA_DIR": str(data_dir), "DR_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "dr.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def base_args(model: Path, run_dir: Path) -> list[str]:
    # mean pooling and a large learning rate: a random tiny BERT's CLS vectors are near-identical, which
    # would make rankings (and so metrics) hinge on float noise
    return [f"model.name_or_path={model}", "model.show_progress=false", "model.passage_max_length=32",
            "model.pooling=mean", "trainer.lr=1e-3",
            "trainer.batch_size=4", "trainer.dev_queries=4", "trainer.tensorboard=false",
            f"hydra.run.dir={run_dir}"]


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_two_step_smoke_run_with_bm25_negatives(tiny_model, train_data_dir, tmp_path):
    run = tmp_path / "run"
    proc = train(["+experiment=bm25_negatives", "trainer.max_steps=2", "export.index=true",
                  "export.corpus=scifact-test", *base_args(tiny_model, run)], train_data_dir, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(losses(run)) == 2 and all(np.isfinite(losses(run)))
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"scifact-train-dev", "scifact-test", "dl19-pool"} <= set(metrics)
    assert (run / "export" / "model.safetensors").exists()
    # the report: one metrics.jsonl line per evaluation and set, curves.png, per-query values for dr.compare
    report = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {(r["set"], r["tag"]) for r in report} >= {("scifact-train-dev", "dev"), ("scifact-test", "test")}
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG" and "curves: " in proc.stdout
    assert {p.name for p in (run / "perquery").glob("*.tsv")} == {f"{s}.tsv" for s in metrics}
    # the export loads in sentence-transformers and reproduces the reported test metric
    st = SentenceTransformer(str(run / "export"), device="cpu")
    from dr.data.sources import beir_set
    from dr.eval.measures import score_run

    test = beir_set("scifact-test", str(train_data_dir / "scifact"), "test")
    docs = test.corpus.texts(test.corpus.active_rows)
    d = st.encode(docs)
    qids = list(test.queries)
    q = st.encode([test.queries[x] for x in qids])
    s = q @ d.T
    run_st = {qid: {str(test.corpus.ids[j]): float(s[i, j]) for j in range(len(docs))} for i, qid in enumerate(qids)}
    ndcg = score_run(run_st, test.qrels, ["nDCG@10"])["nDCG@10"]
    assert ndcg == pytest.approx(metrics["scifact-test"]["nDCG@10"], abs=1e-4)
    # export.index=true: plain faiss loads the passage index beside the encoder and ranks as the model does
    import faiss

    index = faiss.read_index(str(run / "export" / "index.faiss"))
    ids = (run / "export" / "index.docids").read_text().split()
    assert index.ntotal == len(ids) == len(docs)
    assert json.loads((run / "export" / "index.json").read_text())["factory"] == "Flat"
    _, found = index.search(np.ascontiguousarray(q, dtype=np.float32), 3)
    for i, qid in enumerate(qids):
        want = sorted(run_st[qid], key=run_st[qid].get, reverse=True)[:3]
        assert [ids[j] for j in found[i]] == want


def test_resume_matches_uninterrupted_run(tiny_model, train_data_dir, tmp_path):
    common = ["+experiment=bm25_negatives", "trainer.max_steps=6", "negatives.per_query=3"]
    straight = tmp_path / "straight"
    proc = train([*common, "trainer.save_every=0", *base_args(tiny_model, straight)], train_data_dir, tmp_path / "c1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    interrupted = tmp_path / "interrupted"
    proc = train([*common, "trainer.save_every=3", "trainer.keep_checkpoints=5", *base_args(tiny_model, interrupted)],
                 train_data_dir, tmp_path / "c2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    resumed = tmp_path / "resumed"
    proc = train([*common, f"resume={interrupted / 'checkpoints' / 'step-3'}", *base_args(tiny_model, resumed)],
                 train_data_dir, tmp_path / "c3")
    assert proc.returncode == 0, proc.stderr[-4000:]
    full, after = losses(straight), losses(resumed)
    assert len(full) == 6 and len(after) == 3
    np.testing.assert_allclose(after, full[3:], atol=1e-6, rtol=0)
    assert (interrupted / "checkpoints" / "step-3" / "negatives.tsv").exists()


def test_resume_true_continues_in_the_same_run_dir(tiny_model, train_data_dir, tmp_path):
    run = tmp_path / "run"
    args = ["trainer.max_steps=2", "trainer.save_every=2", *base_args(tiny_model, run)]
    assert train(args, train_data_dir, tmp_path / "c").returncode == 0
    proc = train(["resume=true", "trainer.max_steps=3", "trainer.save_every=3", *base_args(tiny_model, run)],
                 train_data_dir, tmp_path / "c")
    assert proc.returncode == 0, proc.stderr[-4000:]
    steps = [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def _keys(path: Path, *fields: str) -> list[tuple]:
    return [tuple(json.loads(x)[f] for f in fields) for x in path.read_text().splitlines()]


def test_resumed_run_logs_each_step_once(tiny_model, train_data_dir, tmp_path):
    """Resuming from the step-2 checkpoint of a finished 3-step run replays step 3 and the final dev and
    test evaluations: the logs hold each once, as the uninterrupted run's do (issue 21, item 2)."""
    run = tmp_path / "run"
    args = ["trainer.max_steps=3", "trainer.save_every=2", "trainer.eval_every=2", *base_args(tiny_model, run)]
    assert train(args, train_data_dir, tmp_path / "c").returncode == 0
    logs = {"train_log.jsonl": ("step",), "eval_log.jsonl": ("step", "tag"),
            "metrics.jsonl": ("step", "set", "tag")}
    straight = {name: _keys(run / name, *fields) for name, fields in logs.items()}
    assert straight["train_log.jsonl"] == [(1,), (2,), (3,)]
    assert straight["eval_log.jsonl"] == [(2, "dev"), (3, "dev"), (3, "test")]
    for _ in range(2):  # any number of resumes
        proc = train([*args, "resume=true"], train_data_dir, tmp_path / "c")
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert {name: _keys(run / name, *fields) for name, fields in logs.items()} == straight
    from dr.report import load_evals

    evals = [(r["step"], r["set"], r["tag"]) for r in load_evals(run)]  # what curves.png draws
    assert len(evals) == len(set(evals))


def test_resume_with_another_batch_size_fails_naming_it(tiny_model, train_data_dir, tmp_path):
    """The checkpoint's batches came from batch size 4: resuming with 2 fails before the model is loaded
    (the model path given does not exist), naming the key and both values; resume_check=false goes on
    (issue 21, item 7)."""
    run = tmp_path / "run"
    args = ["trainer.max_steps=2", "trainer.save_every=2", *base_args(tiny_model, run)]
    assert train(args, train_data_dir, tmp_path / "c").returncode == 0
    saved = json.loads((run / "checkpoints" / "step-2" / "resume_config.json").read_text())
    assert saved["trainer.batch_size"] == 4 and saved["processes"] == 1 and "trainer.max_steps" not in saved
    changed = [*args, "resume=true", "trainer.batch_size=2", "trainer.max_steps=3", "trainer.save_every=3"]
    proc = train([*changed, f"model.name_or_path={tmp_path / 'no-such-model'}"], train_data_dir, tmp_path / "c")
    assert proc.returncode != 0 and "(checkpoint -> now):" in proc.stderr, proc.stderr[-4000:]
    listed = proc.stderr.split("(checkpoint -> now):")[1].split("Resume with")[0].split()
    assert listed == ["trainer.batch_size:", "4", "->", "2"]  # max_steps and save_every are free to change
    assert "resume_check=false" in proc.stderr
    proc = train([*changed, "resume_check=false"], train_data_dir, tmp_path / "c")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "trainer.batch_size: 4 -> 2" in proc.stdout + proc.stderr  # still said (a warning)
    assert [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.batch_size=0", "trainer.batch_size must be > 0, got 0"),
        ("trainer.mixed_precision=fp8", "trainer.mixed_precision must be auto, no (fp32), bf16 or fp16"),
        ("loss.name=softmax", "loss.name must be one of cross_entropy, hard_negative, hinge, ranknet"),
        ("model.temperature=0", "model.temperature must be > 0"),
        ("trainer.batch_size=64", "global batch 64 is larger than the 32 training queries"),
        ("trainer.negatives_per_query=2", "negatives_per_query > 0 needs a negatives source"),
    ],
)
def test_bad_config_value_gives_a_clear_error(tiny_model, train_data_dir, tmp_path, override, message):
    from hydra import compose, initialize_config_dir

    from dr.config import CONFIG_DIR
    from dr.train import build_trainer

    args = [a for a in base_args(tiny_model, tmp_path / "run") if not a.startswith(("trainer.batch_size", "hydra."))]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["trainer.max_steps=1", "loss=cross_entropy", *args, override])
    from hydra.errors import InstantiationException

    # hydra wraps errors raised while instantiating; the message still names the key and the value
    with pytest.raises((ValueError, InstantiationException), match=re.escape(message)):
        build_trainer(cfg, tmp_path / "run")


def test_unknown_test_set_fails_before_anything_is_loaded(tmp_path, monkeypatch):
    """A typo in test_sets names the known sets before the model or the data is loaded (neither exists
    here) instead of a bare ConfigKeyError after both (issue 21, item 8)."""
    from hydra import compose, initialize_config_dir

    from dr.config import CONFIG_DIR
    from dr.train import build_trainer

    monkeypatch.setenv("DR_DATA_DIR", str(tmp_path / "no-data"))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        args = [a for a in base_args(tmp_path / "no-model", tmp_path / "run") if not a.startswith("hydra.")]
        cfg = compose("train", overrides=["trainer.max_steps=1", *args, "test_sets=[scifact-test,scifact-tst]"])
    message = "test_sets: eval set(s) ['scifact-tst'] not in data=scifact; known: ['scifact-test', 'dl19-pool']"
    with pytest.raises(ValueError, match=re.escape(message)):
        build_trainer(cfg, tmp_path / "run")


def test_two_process_launch_runs_the_same_code(tiny_model, train_data_dir, tmp_path):
    """`torchrun --nproc_per_node 2 -m dr.train` (gloo on CPU): both processes train, one writes."""
    run = tmp_path / "ddp"
    env = {**os.environ, "DR_DATA_DIR": str(train_data_dir), "DR_CACHE": str(tmp_path / "c"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "dr.train",
                           "+experiment=bm25_negatives", "trainer.max_steps=2", *base_args(tiny_model, run)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((run / "timings.json").read_text())["world_size"] == 2
    logged = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged] == [1, 2]
    # linear decay over 2 steps from 1e-3: one scheduler step per update gives 5e-4 after the first
    assert logged[0]["lr"] == pytest.approx(5e-4) and logged[1]["lr"] == pytest.approx(0.0)
    assert (run / "export" / "model.safetensors").exists()
