"""Cross-device negatives across 2 gloo processes and GradCache, against one process on the whole batch."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from accelerate import Accelerator

from conftest import PASSAGES, QUERIES
from dr.losses.registry import LossConfig
from dr.models.dual_encoder import DualEncoder, EncoderConfig
from dr.trainer.grad_cache import grad_cache_backward
from dr.objectives.contrastive import ContrastiveObjective

TEXTS = [f"{t} {x}" for t, x in PASSAGES.values()]
QUERY_LIST = list(QUERIES.values())  # 4 queries
PASSAGE_LIST = TEXTS[:8]  # 2 per query: positive, hard negative (group-major)


def make_objective(model_dir: str, loss: str = "cross_entropy") -> ContrastiveObjective:
    enc = DualEncoder(EncoderConfig(model_dir, pooling="mean", score="dot", temperature=0.5, show_progress=False))
    enc.eval()  # no dropout, so every run sees the same function
    return ContrastiveObjective(enc, LossConfig(name=loss), cross_device=True)


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, model_dir: str, rdv: str, out: str, cross_device: bool = True) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=world)
    torch.manual_seed(0)
    objective = make_objective(model_dir)
    objective.cross_device = cross_device
    ddp = torch.nn.parallel.DistributedDataParallel(objective)
    b = len(QUERY_LIST) // world
    queries = QUERY_LIST[rank * b : (rank + 1) * b]
    passages = PASSAGE_LIST[rank * 2 * b : (rank + 1) * 2 * b]
    loss, logs = ddp(queries, passages)
    loss.backward()  # returns after the gradient all-reduce: both processes are done with the group
    torch.save({"loss": logs["loss"], "grads": grads(objective)}, f"{out}/rank{rank}.pt")
    # Exit without tearing DDP and gloo down: torch's teardown can deadlock (the Reducer's destructor
    # destroys the gloo group while holding the GIL, and a gloo thread waits for the GIL to release a
    # tensor); seen once under load, the worker then hung forever.
    os._exit(0)


def test_two_process_cross_device_equals_one_process(tiny_model_dir, tmp_path):
    single = make_objective(str(tiny_model_dir))
    loss, logs = single(QUERY_LIST, PASSAGE_LIST)
    loss.backward()
    want = grads(single)
    mp.spawn(_worker, args=(2, str(tiny_model_dir), str(tmp_path / "rdv"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["loss"] == pytest.approx(logs["loss"], abs=1e-5)
        assert set(got["grads"]) == set(want)
        for name, g in want.items():
            torch.testing.assert_close(got["grads"][name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_without_cross_device_each_process_sees_only_its_batch(tiny_model_dir, tmp_path):
    """cross_device=false in 2 processes: each rank's loss is the one-process loss of its own half."""
    mp.spawn(_worker, args=(2, str(tiny_model_dir), str(tmp_path / "rdv"), str(tmp_path), False), nprocs=2, join=True)
    local = make_objective(str(tiny_model_dir))
    for rank in range(2):
        _, want = local(QUERY_LIST[rank * 2 : rank * 2 + 2], PASSAGE_LIST[rank * 4 : rank * 4 + 4])
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-5)
    _, full = local(QUERY_LIST, PASSAGE_LIST)
    assert got["loss"] != pytest.approx(full["loss"], abs=1e-3)


@pytest.mark.parametrize("loss", ["cross_entropy", "ranknet"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_grad_cache_equals_uncached_batch(tiny_model_dir, chunk, loss):
    plain = make_objective(str(tiny_model_dir), loss)
    want_loss, _ = plain(QUERY_LIST, PASSAGE_LIST)
    want_loss.backward()
    cached = make_objective(str(tiny_model_dir), loss)
    got_loss, _ = grad_cache_backward(cached, cached, Accelerator(cpu=True), QUERY_LIST, PASSAGE_LIST, chunk)
    assert float(got_loss) == pytest.approx(float(want_loss.detach()), abs=1e-5)
    want, got = grads(plain), grads(cached)
    assert set(got) == set(want)
    for name in want:
        # float32 sums in another order (no padding inside a chunk): agreement to 1e-5 on gradients of order 1
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4, msg=name)


def test_matryoshka_objective_sums_the_loss_over_renormalized_prefixes(tiny_model_dir):
    from dr.losses.contrastive import softmax_cross_entropy

    enc = DualEncoder(EncoderConfig(str(tiny_model_dir), pooling="mean", score="cosine", temperature=0.1,
                                    show_progress=False, precision="fp32"))
    enc.eval()
    obj = ContrastiveObjective(enc, LossConfig(matryoshka_dims=[32, 8], matryoshka_weights=[1.0, 0.5]))
    queries = list(QUERIES.values())[:2]
    passages = [f"{t} {x}" for t, x in PASSAGES.values()][:4]  # 2 per query, positive first
    loss, _ = obj(queries, passages)
    with torch.no_grad():
        q, p = obj.embed("query", queries), obj.embed("passage", passages)
        targets = torch.tensor([0, 2])
        full = softmax_cross_entropy(q @ p.T / 0.1, targets)
        q8 = torch.nn.functional.normalize(q[:, :8], dim=-1)
        p8 = torch.nn.functional.normalize(p[:, :8], dim=-1)
        short = softmax_cross_entropy(q8 @ p8.T / 0.1, targets)
    assert float(loss) == pytest.approx(float(full + 0.5 * short), abs=1e-5)
    assert abs(float(short) - float(full)) > 1e-4  # the prefix term is not the full term again
