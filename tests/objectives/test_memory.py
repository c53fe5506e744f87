"""Cross-batch memory: the ring buffer by hand, its negatives in the contrastive loss, the own-positive mask,
checkpoint round trip, and two gloo processes holding the same memory as one process."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf
from safetensors.torch import load_model, save_model

from conftest import PASSAGES, QUERIES
from dr.losses.contrastive import softmax_cross_entropy
from dr.losses.registry import LossConfig
from dr.models.dual_encoder import DualEncoder, EncoderConfig
from dr.objectives.base import ConfigError
from dr.objectives.contrastive import ContrastiveConfig, ContrastiveObjective
from dr.objectives.memory import CrossBatchMemory, passage_key

TEXTS = [f"{t} {x}" for t, x in PASSAGES.values()]
QUERY_LIST = list(QUERIES.values())  # 4 queries
PASSAGE_LIST = TEXTS[:8]  # 2 per query: positive, hard negative (group-major)
PIDS = [f"p{i}" for i in range(8)]


def test_ring_buffer_by_hand():
    m = CrossBatchMemory(size=3, dim=2)
    emb, keys = m.entries()
    assert emb.shape == (0, 2) and keys.numel() == 0
    m.push(torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([1, 2]))  # slots 0, 1
    m.push(torch.tensor([[3.0, 0.0], [4.0, 0.0]]), torch.tensor([3, 4]))  # slot 2, then slot 0 (overwrites 1)
    emb, keys = m.entries()
    assert keys.tolist() == [4, 2, 3] and emb[:, 0].tolist() == [4.0, 2.0, 3.0]
    assert m.written.tolist() == [2, 1, 2] and int(m.tick) == 2 and int(m.cursor) == 1
    aged = CrossBatchMemory(size=3, dim=2, max_age=1)  # only the last push's entries
    aged.load_state_dict(m.state_dict())
    assert aged.entries()[1].tolist() == [4, 3]
    m.push(torch.arange(10.0).reshape(5, 2), torch.arange(5))  # more rows than slots: the last 3 are kept
    assert sorted(m.entries()[1].tolist()) == [2, 3, 4]
    with pytest.raises(ValueError):
        CrossBatchMemory(size=0, dim=2)
    assert passage_key("p1") == passage_key("p1") != passage_key("p2")  # stable, not Python's salted hash


def make_objective(model_dir: str, size: int = 16) -> ContrastiveObjective:
    enc = DualEncoder(EncoderConfig(model_dir, pooling="mean", score="dot", temperature=0.5, show_progress=False))
    enc.eval()  # no dropout: embeddings are a function of the text
    return ContrastiveObjective(enc, LossConfig(), cross_device=True, memory=CrossBatchMemory(size, enc.dim))


def step(obj: ContrastiveObjective, queries: list[str], passages: list[str], pids: list[str]):
    obj._batch_pids = list(pids)  # what obj.batch(groups) records for the step
    return obj(queries, passages)


def test_memory_adds_the_last_batch_as_negatives_and_masks_a_querys_own_positive(tiny_model_dir):
    obj = make_objective(str(tiny_model_dir))
    _, logs = step(obj, QUERY_LIST[:2], PASSAGE_LIST[:4], PIDS[:4])
    assert "memory_negatives" in logs and logs["memory_negatives"] == 0.0  # empty before the first push
    loss, logs = step(obj, QUERY_LIST[2:], PASSAGE_LIST[4:], PIDS[4:])
    with torch.no_grad():
        q, p_now, p_mem = (obj.embed("query", QUERY_LIST[2:]), obj.embed("passage", PASSAGE_LIST[4:]),
                           obj.embed("passage", PASSAGE_LIST[:4]))
        scores = torch.cat([obj.encoder.score(q, p_now), obj.encoder.score(q, p_mem)], dim=1)  # (2, 4 + 4)
        want = softmax_cross_entropy(scores, torch.tensor([0, 2]))
    assert logs["memory_negatives"] == 4.0 and float(loss.detach()) == pytest.approx(float(want), abs=1e-5)
    # the loss's gradient reaches the queries and the current passages only (the memory is a constant)
    assert obj.memory.embeddings.grad is None
    # a batch whose first positive is p1 (in memory from the first step) and whose second positive is p6 (in
    # memory from the second): those entries are not negatives of those queries
    loss, _ = step(obj, QUERY_LIST[:2], PASSAGE_LIST[4:], ["p1", "p5", "p6", "p7"])
    with torch.no_grad():
        q, p_now = obj.embed("query", QUERY_LIST[:2]), obj.embed("passage", PASSAGE_LIST[4:])
        mem_emb, mem_keys = obj.memory.entries()  # after this step's push; the step saw the 8 entries before it
    with torch.no_grad():
        before = torch.cat([obj.embed("passage", PASSAGE_LIST[:4]), obj.embed("passage", PASSAGE_LIST[4:])])
        scores = torch.cat([obj.encoder.score(q, p_now), obj.encoder.score(q, before)], dim=1)  # (2, 4 + 8)
        candidates = torch.ones_like(scores, dtype=torch.bool)
        candidates[0, 4 + 1] = False  # memory slot 1 holds p1, query 0's positive
        candidates[1, 4 + 6] = False  # and slot 6 holds p6, query 1's positive (met as its positive before)
        want = softmax_cross_entropy(scores, torch.tensor([0, 2]), candidates)
    assert float(loss) == pytest.approx(float(want), abs=1e-5)
    assert mem_keys.numel() == 12 and mem_emb.shape == (12, obj.encoder.dim)


def test_memory_is_in_the_checkpointed_state(tiny_model_dir, tmp_path):
    obj = make_objective(str(tiny_model_dir))
    step(obj, QUERY_LIST[:2], PASSAGE_LIST[:4], PIDS[:4])
    assert {"memory.embeddings", "memory.keys", "memory.written", "memory.tick", "memory.cursor"} <= set(
        obj.state_dict())
    save_model(obj, str(tmp_path / "model.safetensors"))  # what save_checkpoint writes
    restored = make_objective(str(tiny_model_dir))
    load_model(restored, str(tmp_path / "model.safetensors"))
    for a, b in zip(obj.memory.entries(), restored.memory.entries()):
        torch.testing.assert_close(a, b)
    a, _ = step(obj, QUERY_LIST[2:], PASSAGE_LIST[4:], PIDS[4:])
    b, _ = step(restored, QUERY_LIST[2:], PASSAGE_LIST[4:], PIDS[4:])
    assert float(a) == pytest.approx(float(b), abs=1e-6)


def test_memory_config_checks():
    cfg = OmegaConf.create({"loss": {"_target_": "dr.losses.registry.LossConfig", "in_batch": False}})
    with pytest.raises(ConfigError, match="loss.in_batch=false"):
        ContrastiveConfig(memory_size=8).check(cfg)
    with pytest.raises(ConfigError, match=">= 0"):
        ContrastiveConfig(memory_max_age=-1).check(OmegaConf.create({}))
    ContrastiveConfig(memory_size=8).check(OmegaConf.create({}))
    tas = OmegaConf.create({"sampler": {"_target_": "dr.data.tas.TasConfig"}})
    with pytest.raises(ConfigError, match="sampler=ngame or sampler=curriculum"):
        ContrastiveConfig().check(tas)
    ContrastiveConfig().check(OmegaConf.create({"sampler": {"_target_": "dr.data.groups.BatchingConfig"}}))


def _worker(rank: int, world: int, model_dir: str, rdv: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=world)
    obj = make_objective(model_dir)
    ddp = torch.nn.parallel.DistributedDataParallel(obj)
    losses = []
    for batch in (0, 1):  # two global batches of 2 queries, one query per process each
        i = 2 * batch + rank
        obj._batch_pids = PIDS[2 * i: 2 * i + 2]
        loss, logs = ddp(QUERY_LIST[i: i + 1], PASSAGE_LIST[2 * i: 2 * i + 2])
        loss.backward()
        losses.append(logs["loss"])
    emb, keys = obj.memory.entries()
    torch.save({"losses": losses, "emb": emb, "keys": keys}, f"{out}/rank{rank}.pt")
    os._exit(0)  # see tests/objectives/test_contrastive.py: no DDP/gloo teardown


def test_two_processes_hold_the_memory_of_one(tiny_model_dir, tmp_path):
    single = make_objective(str(tiny_model_dir))
    want = [step(single, QUERY_LIST[2 * b: 2 * b + 2], PASSAGE_LIST[4 * b: 4 * b + 4], PIDS[4 * b: 4 * b + 4])[1]["loss"]
            for b in (0, 1)]
    mp.spawn(_worker, args=(2, str(tiny_model_dir), str(tmp_path / "rdv"), str(tmp_path)), nprocs=2, join=True)
    emb, keys = single.memory.entries()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["losses"] == pytest.approx(want, abs=1e-5)
        assert got["keys"].tolist() == keys.tolist()
        torch.testing.assert_close(got["emb"], emb, atol=1e-5, rtol=1e-4)
