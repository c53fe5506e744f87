"""Sharded evaluation: 2 processes (gloo) give the run one process gives, each encoding only its shard,
and the cache they write as two parts serves a later single process."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dr.data.sources import beir_set
from dr.encoding.cache import EmbeddingCache
from dr.eval.evaluator import Evaluator
from dr.index import IndexConfig
from dr.models.dual_encoder import DualEncoder, EncoderConfig
from dr.retrievers.dense import DenseRetriever


def _evaluate(model_dir: str, data_dir: str, out: Path, cache_dir: Path, factory: str = "Flat") -> DenseRetriever:
    eval_set = beir_set("scifact-test", str(Path(data_dir) / "scifact"), "test")
    enc = DualEncoder(EncoderConfig(model_dir, pooling="mean", score="dot", batch_size=2, show_progress=False))
    with torch.no_grad():  # a random BERT's tiny word embeddings make equal-length texts tie; scaled, words decide
        enc.query_model.embeddings.word_embeddings.weight.mul_(50)
    retriever = DenseRetriever(enc, index=IndexConfig(factory=factory, device="cpu", nprobe=2),
                               cache=EmbeddingCache(cache_dir))
    Evaluator(depth=12).evaluate(retriever, [eval_set], out)
    return retriever


def _worker(rank: int, world: int, model_dir: str, data_dir: str, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rdv", rank=rank, world_size=world)
    retriever = _evaluate(model_dir, data_dir, Path(tmp) / "two", Path(tmp) / "cache-two")
    Path(tmp, f"stats{rank}.json").write_text(json.dumps({"passages": retriever.stats.passages}))
    dist.destroy_process_group()


def test_two_process_evaluation_equals_one_process(tiny_model_dir, tiny_data_dir, tmp_path):
    mp.spawn(_worker, args=(2, str(tiny_model_dir), str(tiny_data_dir), str(tmp_path)), nprocs=2, join=True)
    one = _evaluate(str(tiny_model_dir), str(tiny_data_dir), tmp_path / "one", tmp_path / "cache-one")
    two_run = (tmp_path / "two" / "runs" / "scifact-test.trec").read_text()
    assert two_run == (tmp_path / "one" / "runs" / "scifact-test.trec").read_text()  # same passages, scores, order
    assert json.loads((tmp_path / "two" / "metrics.json").read_text()) == json.loads(
        (tmp_path / "one" / "metrics.json").read_text())
    # each process encoded only its shard: together the corpus once
    passages = [json.loads((tmp_path / f"stats{r}.json").read_text())["passages"] for r in range(2)]
    assert sum(passages) == one.stats.passages == 12 and max(passages) < 12
    # the two-part cache entry serves one process: no encoding, the same run
    reread = _evaluate(str(tiny_model_dir), str(tiny_data_dir), tmp_path / "reread", tmp_path / "cache-two")
    assert reread.stats.passages == 0 and reread.stats.cache_hits == 1
    assert (tmp_path / "reread" / "runs" / "scifact-test.trec").read_text() == two_run


def _ivf_worker(rank: int, world: int, model_dir: str, data_dir: str, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rdv", rank=rank, world_size=world)
    _evaluate(model_dir, data_dir, Path(tmp) / "two", Path(tmp) / "cache-two", factory="IVF2,Flat")
    dist.destroy_process_group()


def test_sharded_approximate_index_runs_per_shard(tiny_model_dir, tiny_data_dir, tmp_path):
    """Each process builds its own index over its shard; with every list probed the result is exact."""
    mp.spawn(_ivf_worker, args=(2, str(tiny_model_dir), str(tiny_data_dir), str(tmp_path)), nprocs=2, join=True)
    one = tmp_path / "one"
    _evaluate(str(tiny_model_dir), str(tiny_data_dir), one, tmp_path / "cache-one")
    assert (tmp_path / "two" / "runs" / "scifact-test.trec").read_text() == (one / "runs" / "scifact-test.trec"
                                                                             ).read_text()


def test_torchrun_evaluate_writes_what_one_process_writes(tiny_model, tiny_data_dir, tmp_path):
    """`torchrun --nproc_per_node 2 -m dr.evaluate`: the process group comes from the launcher's
    environment, each process encodes half of each corpus, and metrics.json and the runs equal one
    process's (each with its own, empty cache)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    args = [f"model.name_or_path={tiny_model}", "model.show_progress=false", "model.batch_size=2"]
    outs = {}
    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--nproc_per_node", "2"])):
        outs[name] = tmp_path / name
        env = {**os.environ, "DR_DATA_DIR": str(tiny_data_dir), "DR_CACHE": str(tmp_path / f"cache-{name}"),
               "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, *launcher, "-m", "dr.evaluate", *args, f"hydra.run.dir={outs[name]}"],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
    assert (outs["two"] / "metrics.json").read_text() == (outs["one"] / "metrics.json").read_text()
    for run in ("scifact-test", "dl19-pool"):
        assert (outs["two"] / "runs" / f"{run}.trec").read_text() == (outs["one"] / "runs" / f"{run}.trec").read_text()
    timings = json.loads((outs["two"] / "timings.json").read_text())
    assert timings["world_size"] == 2 and sum(timings["passages_encoded_per_process"]) == 24
    assert max(timings["passages_encoded_per_process"]) < 24
