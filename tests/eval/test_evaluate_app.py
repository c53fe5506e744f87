"""`python -m dr.evaluate` end to end on the tiny model and the fixture data folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dr.data.sources import beir_set
from dr.encoding.cache import EmbeddingCache
from dr.eval.evaluator import Evaluator
from dr.models.dual_encoder import DualEncoder, EncoderConfig
from dr.retrievers.dense import DenseRetriever

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "dr.evaluate", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_evaluate_writes_metrics_runs_and_table(tiny_model, tiny_data_dir, tmp_path):
    out = tmp_path / "eval"
    env = {"DR_DATA_DIR": str(tiny_data_dir), "DR_CACHE": str(tmp_path / "cache")}
    proc = _run([f"model.name_or_path={tiny_model}", "model.show_progress=false", f"hydra.run.dir={out}"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"scifact-test", "dl19-pool"}
    assert set(metrics["scifact-test"]) == {"RR@10", "nDCG@10", "R@100", "R@1000"}
    # 12 passages, depth 1000: every relevant passage is retrieved
    assert metrics["scifact-test"]["R@100"] == pytest.approx(1.0)
    lines = (out / "runs" / "scifact-test.trec").read_text().splitlines()
    assert len(lines) == 4 * 12 and lines[0].split()[1] == "Q0"
    assert "| scifact-test |" in proc.stdout
    timings = json.loads((out / "timings.json").read_text())
    assert timings["passages_encoded"] == 12 + 12 and timings["cache_hits"] == 0
    assert timings["embedding_cache_reused"] == 0  # it wrote both encodings itself
    # the same model again: corpus embeddings come from the cache and metrics are identical
    again = _run([f"model.name_or_path={tiny_model}", "model.show_progress=false", f"hydra.run.dir={out}2"], env)
    assert again.returncode == 0, again.stderr[-3000:]
    timings2 = json.loads((out.parent / "eval2" / "timings.json").read_text())
    assert timings2["cache_hits"] == 2 and timings2["embedding_cache_reused"] == 2
    assert json.loads((out.parent / "eval2" / "metrics.json").read_text()) == metrics


def test_bm25_retriever_and_eval_set_selection(tiny_data_dir, tmp_path):
    out = tmp_path / "bm25"
    proc = _run(["retriever=bm25", "eval_sets=[scifact-test]", f"hydra.run.dir={out}"],
                {"DR_DATA_DIR": str(tiny_data_dir), "DR_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["scifact-test"]
    assert metrics["scifact-test"]["RR@10"] == pytest.approx(1.0)  # every fixture query shares words with its best passage


def test_unknown_eval_set_is_a_clear_error(tiny_data_dir, tmp_path):
    proc = _run(["retriever=bm25", "eval_sets=[nope]", f"hydra.run.dir={tmp_path}"], {"DR_DATA_DIR": str(tiny_data_dir)})
    assert proc.returncode != 0 and "eval set(s) ['nope'] not in data=scifact" in proc.stderr


def test_dense_retriever_equals_brute_force_and_cache_detects_changes(tiny_model, tiny_data_dir, tmp_path):
    eval_set = beir_set("t", str(tiny_data_dir / "scifact"), "test")
    enc = DualEncoder(EncoderConfig(str(tiny_model), pooling="mean", score="cosine", show_progress=False))
    cache = EmbeddingCache(tmp_path / "emb")
    retriever = DenseRetriever(enc, cache=cache)
    run, _ = Evaluator(depth=5).evaluate_set(retriever, eval_set)
    docs = eval_set.corpus.texts(eval_set.corpus.active_rows)
    p = enc.encode_passages(docs)
    for qid, text in eval_set.queries.items():
        s = enc.encode_queries([text])[0] @ p.T
        np.testing.assert_allclose(sorted(run[qid].values(), reverse=True), np.sort(s)[::-1][:5], atol=1e-5)
        for docid, score in run[qid].items():  # each returned score is that passage's exact score
            assert score == pytest.approx(float(s[list(eval_set.corpus.ids).index(docid)]), abs=1e-5)
    assert retriever.stats.passages == 12
    retriever.retrieve(eval_set, 5)
    assert retriever.stats.cache_hits == 1 and retriever.stats.passages == 12
    import torch

    with torch.no_grad():
        next(enc.passage_model.parameters()).add_(0.01)
    retriever.retrieve(eval_set, 5)
    assert retriever.stats.passages == 24  # weights changed: encoded again


def test_embeddings_kept_in_memory_reach_disk_once_worth_persisting(tiny_model, tiny_data_dir, tmp_path):
    from dr.encoding.sharded import EncodeStats, encode_corpus

    corpus = beir_set("t", str(tiny_data_dir / "scifact"), "test").corpus
    enc = DualEncoder(EncoderConfig(str(tiny_model), batch_size=4, show_progress=False))
    cache, stats = EmbeddingCache(tmp_path / "emb", persist=False), EncodeStats()
    first = encode_corpus(enc, corpus, cache, stats)  # a model in training: memory only
    assert stats.passages == 12 and not list((tmp_path / "emb").rglob("manifest.json"))
    cache.persist = True  # the final (exported) model: its embeddings are reused by later runs
    assert encode_corpus(enc, corpus, cache, stats) is first and stats.passages == 12
    assert len(list((tmp_path / "emb").rglob("manifest.json"))) == 1
    again = encode_corpus(enc, corpus, EmbeddingCache(tmp_path / "emb"), stats)  # another process
    assert stats.passages == 12 and stats.cache_hits == 2
    np.testing.assert_array_equal(again.matrix(corpus.active_rows), first.matrix(corpus.active_rows))


def test_reused_counts_only_encodings_an_earlier_process_wrote(tmp_path):
    from dr.encoding import cache as cache_mod

    def write(cache, meta):
        w = cache.create_part(meta, 0, 1, 2)
        w.rows[:], w.emb[:] = [0, 1], 1.0
        w.commit()
        cache.write_manifest(meta, [2])

    before = cache_mod.reused_from_earlier_runs()
    mine = cache_mod.EmbeddingCache(tmp_path / "emb", memory_entries=0)
    own, earlier = cache_mod.EntryMeta("own", "c", 2, 2), cache_mod.EntryMeta("earlier", "c", 2, 2)
    write(mine, own)
    assert mine.open(own) is not None  # read back from disk, but this process wrote it
    assert cache_mod.reused_from_earlier_runs() == before
    write(mine, earlier)
    cache_mod._WRITTEN_HERE.discard(str(mine.entry(earlier)))  # as another process leaves it
    assert mine.open(earlier) is not None and mine.open(earlier) is not None
    other = cache_mod.EmbeddingCache(tmp_path / "emb")
    assert other.open(earlier) is not None  # another instance, same entry: still one encoding saved
    assert cache_mod.reused_from_earlier_runs() == before + 1


def test_cache_dtype_float16_writes_half_size_parts(tiny_model, tiny_data_dir, tmp_path):
    env = {"DR_DATA_DIR": str(tiny_data_dir), "DR_CACHE": str(tmp_path / "cache")}
    proc = _run([f"model.name_or_path={tiny_model}", "model.show_progress=false", "cache_dtype=float16",
                 "eval_sets=[scifact-test]", f"hydra.run.dir={tmp_path / 'eval'}"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parts = list((tmp_path / "cache" / "embeddings").rglob("part-*.emb.npy"))
    assert parts and all(np.load(p, mmap_mode="r").dtype == np.float16 for p in parts)
    assert all(json.loads(m.read_text())["dtype"] == "float16"
               for m in (tmp_path / "cache" / "embeddings").rglob("manifest.json"))
