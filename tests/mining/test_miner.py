"""The dynamic miner: exact top-k, positives never returned, false-negative filter, sharded = single."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dr.data.sources import beir_set
from dr.index import IndexConfig
from dr.index import merge_topk
from dr.mining.filters import filter_candidates
from dr.mining.miner import Miner, MinerConfig
from dr.mining.select import select_negatives
from dr.models.dual_encoder import DualEncoder, EncoderConfig


def encoder(model_dir) -> DualEncoder:
    enc = DualEncoder(EncoderConfig(str(model_dir), pooling="mean", score="dot", temperature=0.5,
                                    passage_max_length=32, batch_size=4, show_progress=False))
    # a random BERT's tiny word embeddings make texts of equal length tie; scaled up, words decide
    with torch.no_grad():
        enc.query_model.embeddings.word_embeddings.weight.mul_(50)
    return enc


def train_set(data_dir: Path):
    return beir_set("scifact-train", str(data_dir / "scifact"), "train")


def test_search_equals_brute_force(tiny_model_dir, train_data_dir):
    ts, enc = train_set(train_data_dir), encoder(tiny_model_dir)
    qids = sorted(ts.queries)
    run, pos_best, _ = Miner(MinerConfig(depth=5, fn_fraction=1.0)).search(enc, ts, qids)
    rows = ts.corpus.active_rows
    p = enc.encode_passages(ts.corpus.texts(rows))
    q = enc.encode_queries([ts.queries[x] for x in qids])
    s = q @ p.T / 0.5  # the model's scores: dot / temperature
    ids = ts.corpus.ids[rows]
    for i, qid in enumerate(qids):
        top = np.argsort(-s[i], kind="stable")[:5]
        assert sorted(run[qid]) == sorted(ids[top].tolist())
        np.testing.assert_allclose(sorted(run[qid].values()), sorted(s[i, top]), rtol=1e-5, atol=1e-5)
        pos = [j for j, d in enumerate(ids) if ts.qrels[qid].get(d, 0) > 0]
        assert pos_best[qid] == pytest.approx(s[i, pos].max(), abs=1e-4)


def test_positives_never_come_back_and_window_is_applied(tiny_model_dir, train_data_dir):
    ts, enc = train_set(train_data_dir), encoder(tiny_model_dir)
    qids = sorted(ts.queries)
    miner = Miner(MinerConfig(depth=12, window=(1, 6), per_query=3, sampling="top"))
    negs, stats = miner.refresh(enc, ts, qids, step=0, version=1)
    run, _, _ = miner.search(enc, ts, qids)
    for qid in qids:
        positives = {d for d, g in ts.qrels[qid].items() if g > 0}
        assert negs[qid] and not positives & set(negs[qid])
        ranked = [d for d, _ in sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0])) if d not in positives]
        assert negs[qid] == ranked[1:4]  # window [1, 6): skip the top one; `top` keeps the first 3
    assert stats.queries == len(qids) and stats.negatives_per_query == 3


def test_uniform_sampling_is_deterministic_for_a_seed(tiny_model_dir, train_data_dir):
    ts, enc = train_set(train_data_dir), encoder(tiny_model_dir)
    qids = sorted(ts.queries)
    a = Miner(MinerConfig(depth=12, per_query=3, seed=1)).refresh(enc, ts, qids, 0, 1)[0]
    b = Miner(MinerConfig(depth=12, per_query=3, seed=1)).refresh(enc, ts, qids, 0, 1)[0]
    c = Miner(MinerConfig(depth=12, per_query=3, seed=1)).refresh(enc, ts, qids, 0, 2)[0]
    assert a == b and a != c  # a new version draws anew


def test_refresh_schedule():
    static, every3 = MinerConfig(refresh_every=0), MinerConfig(refresh_every=3)
    assert [s for s in range(10) if static.due(s, None if s == 0 else 0)] == [0]
    last, due = None, []
    for step in range(10):
        if every3.due(step, last):
            due.append(step)
            last = step
    assert due == [0, 3, 6, 9]
    assert every3.due(4, None)  # resumed without negatives: mine now
    assert not every3.due(3, 3)  # resumed at a step whose refresh is already in hand


def test_merge_topk_across_shards():
    a = (np.array([[5.0, 1.0]]), np.array([[10, 11]]))
    b = (np.array([[3.0, -1.0]]), np.array([[20, -1]]))
    scores, rows = merge_topk([a, b], 3)
    assert rows.tolist() == [[10, 20, 11]] and scores.tolist() == [[5.0, 3.0, 1.0]]


def test_false_negative_filters_by_fraction_margin_and_teacher_count_each_filter():
    run = {"q": {"a": 9.5, "b": 8.0, "c": 2.0}, "r": {"a": 1.0}}
    out, counts = filter_candidates(run, {"q": 10.0, "r": -math.inf}, fraction=0.9)
    assert out == {"q": {"b": 8.0, "c": 2.0}, "r": {"a": 1.0}} and counts["positive_fraction"] == 1
    out, counts = filter_candidates(run, {"q": 10.0}, margin=2.5)
    assert out["q"] == {"c": 2.0} and counts["positive_margin"] == 2
    teacher = {"q": {"b": 0.99, "c": 0.1}}
    out, counts = filter_candidates(run, {}, teacher=teacher, teacher_threshold=0.5)
    assert out["q"] == {"a": 9.5, "c": 2.0} and counts["teacher_threshold"] == 1
    out, counts = filter_candidates(run, {}, teacher=teacher, teacher_positive={"q": 0.05},
                                    teacher_above_positive=True)
    assert out["q"] == {"a": 9.5} and counts == {"positive_fraction": 0, "positive_margin": 0,
                                                   "teacher_threshold": 0, "teacher_above_positive": 2}


def test_weighted_sampling_never_draws_a_zero_weight_candidate():
    run = {"q": {f"d{i}": float(-i) for i in range(6)}}
    weights = {"q": {"d0": 0.0, "d1": 0.0, "d2": 1.0, "d3": 1.0, "d4": 1.0}}  # d5 unlisted: weight 1
    for seed in range(20):
        got = select_negatives(run, {}, (0, 6), 3, np.random.default_rng(seed), "uniform", weights)["q"]
        assert len(got) == 3 and not {"d0", "d1"} & set(got)
    only = {"q": {d: (1.0 if d == "d4" else 0.0) for d in run["q"]}}
    assert select_negatives(run, {}, (0, 6), 3, np.random.default_rng(0), "uniform", only)["q"] == ["d4"]


def test_teacher_filters_and_denoise_in_refresh(tiny_model_dir, train_data_dir):
    ts, enc = train_set(train_data_dir), encoder(tiny_model_dir)
    qids = sorted(ts.queries)
    with pytest.raises(ValueError, match="needs a teacher"):
        Miner(MinerConfig(fn_teacher="ranker", fn_teacher_threshold=0.5))
    with pytest.raises(ValueError, match="need a teacher"):
        MinerConfig(fn_teacher_above_positive=True)
    with pytest.raises(ValueError, match="not both"):
        MinerConfig(fn_teacher="fusion", denoise=True, fn_teacher_threshold=1.0)
    assert MinerConfig(fn_ranker_threshold=0.5).fn_teacher == "ranker"  # the older spelling
    with pytest.raises(ValueError, match="weights would do nothing"):  # every candidate kept: weights moot
        MinerConfig(fn_teacher="fusion", denoise=True, depth=200, per_query=200)
    first = Miner(MinerConfig(depth=12, per_query=12, sampling="top")).refresh(enc, ts, qids, 0, 1)[0]
    banned = {first[q][0] for q in qids}
    calls = []

    def fake(train_set, qid, pids):  # a teacher that calls each query's first mined negative a positive
        calls.append(len(pids))
        return [0.5 if train_set.qrels[qid].get(p, 0) > 0 else (1.0 if p in banned else 0.0) for p in pids]

    miner = Miner(MinerConfig(depth=12, per_query=12, sampling="top", fn_teacher="ranker",
                              fn_teacher_above_positive=True, fn_teacher_depth=4), teacher=fake)
    negs, stats = miner.refresh(enc, ts, qids, 0, 1)
    assert all(not banned & set(first[q][:4]) & set(negs[q]) for q in qids)  # judged and banned: gone
    assert any(banned & set(first[q][4:]) & set(negs[q]) for q in qids)  # below the judged depth: kept
    # the teacher judges each query's top 4 (first[q] is the top 12 in rank order): every banned one there goes
    assert stats.filtered_by["teacher_above_positive"] == stats.filtered == sum(
        len(banned & set(first[q][:4])) for q in qids)
    assert stats.teacher_pairs == sum(calls) > 0
    _, again = miner.refresh(enc, ts, qids, 5, 2)  # same model, same candidates: nothing scored twice
    assert again.teacher_pairs == 0 and again.filtered == stats.filtered
    # denoise: the same suspects are kept but weighted 1 - sigmoid(1 - 0.5) = 0.378, others 1 - sigmoid(-0.5)
    cfg = MinerConfig(depth=12, per_query=3, sampling="uniform", fn_teacher="ranker", denoise=True,
                      fn_teacher_depth=4)
    _, stats = Miner(cfg, teacher=fake).refresh(enc, ts, qids, 0, 1)
    assert stats.filtered == 0 and 0.37 < stats.denoise_mean_weight < 0.63
    assert {"candidates", "filtered_by", "teacher_pairs", "denoise_mean_weight"} <= set(stats.as_dict())
    # the positive-aware filter counts candidates only: the positive itself (score = the best positive's,
    # above any fraction < 1 of it) is not among them
    _, stats = Miner(MinerConfig(depth=12, per_query=12, sampling="top", fn_fraction=0.999)).refresh(enc, ts, qids, 0, 1)
    retrieved_positives = sum(1 for q in qids for d in ts.qrels[q] if ts.qrels[q][d] > 0)
    assert stats.candidates == 12 * len(qids) - retrieved_positives  # 12 = the whole tiny corpus
    assert stats.filtered_by["positive_fraction"] < stats.candidates


def _shard_worker(rank: int, world: int, model_dir: str, data_dir: str, rdv: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=world)
    torch.manual_seed(0)
    ts = train_set(Path(data_dir))
    cfg = MinerConfig(depth=6, window=(0, 6), per_query=4, sampling="uniform", fn_margin=0.0,
                      index=IndexConfig(device="cpu"))
    negs, stats = Miner(cfg).refresh(encoder(model_dir), ts, sorted(ts.queries), 0, 1)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"negatives": negs, "passages": stats.passages}))
    dist.destroy_process_group()


def test_two_process_sharded_refresh_equals_one_process(tiny_model_dir, train_data_dir, tmp_path):
    mp.spawn(_shard_worker, args=(2, str(tiny_model_dir), str(train_data_dir), str(tmp_path / "rdv"), str(tmp_path)),
             nprocs=2, join=True)
    ts = train_set(train_data_dir)
    cfg = MinerConfig(depth=6, window=(0, 6), per_query=4, sampling="uniform", fn_margin=0.0,
                      index=IndexConfig(device="cpu"))
    single, _ = Miner(cfg).refresh(encoder(tiny_model_dir), ts, sorted(ts.queries), 0, 1)
    parts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert parts[0]["negatives"] == parts[1]["negatives"] == single
    # each process encoded only its shard of the corpus
    assert parts[0]["passages"] + parts[1]["passages"] == len(ts.corpus)
    assert max(p["passages"] for p in parts) < len(ts.corpus)


def test_blockwise_exact_search_and_index_over_blocks_equal_brute_force():
    from dr.index import search_blocks

    rng = np.random.default_rng(0)
    emb, q = rng.standard_normal((500, 16), dtype=np.float32), rng.standard_normal((7, 16), dtype=np.float32)
    rows = np.arange(1000, 1500)  # a shard: corpus rows 1000..1499, in blocks of 128
    blocks = lambda: ((rows[i : i + 128], emb[i : i + 128]) for i in range(0, 500, 128))  # noqa: E731
    s_knn, r_knn = search_blocks(q, blocks, 500, 10, IndexConfig(factory="Flat", device="cpu"))
    s_hnsw, r_hnsw = search_blocks(q, blocks, 500, 10, IndexConfig(factory="HNSW32", device="cpu", ef_search=512))
    exact = q @ emb.T
    top = np.argsort(-exact, axis=1)[:, :10]
    assert (r_knn == rows[top]).all()
    np.testing.assert_allclose(s_knn, np.take_along_axis(exact, top, 1), rtol=1e-5, atol=1e-5)
    assert (r_hnsw == r_knn).mean() > 0.95  # approximate index, same interface
    s3, r3 = search_blocks(q, lambda: [(rows[:3], emb[:3])], 3, 10, IndexConfig(device="cpu"))
    assert r3.shape == (7, 10) and (r3[:, 3:] == -1).all() and (r3[:, :3] >= 1000).all()


def test_miner_index_must_be_inner_product():
    with pytest.raises(ValueError, match="inner product"):
        MinerConfig(index=IndexConfig(metric="l2"))
