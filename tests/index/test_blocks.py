"""Blockwise search against brute force, merging, index placement on (fake) GPU lists."""
from __future__ import annotations

import numpy as np
import pytest

from dr.index import IndexConfig, build_block_index, exact_search, gpu_devices, merge_topk, recall_at_k


def brute_force(x: np.ndarray, q: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q @ x.T
    order = np.lexsort((np.broadcast_to(ids, s.shape), -s), axis=1)[:, :k]  # score desc, then id
    return np.take_along_axis(s, order, 1), ids[order]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    ids = rng.permutation(5000)[:1000].astype(np.int64)  # corpus rows of a shard: arbitrary, unsorted
    q = rng.standard_normal((40, 16)).astype(np.float32)
    return x, ids, q


@pytest.mark.parametrize("block", [1000, 256, 7])
def test_blockwise_exact_search_equals_brute_force(data, block):
    x, ids, q = data
    blocks = [(ids[i : i + block], x[i : i + block]) for i in range(0, len(x), block)]
    scores, got = exact_search(q, blocks, 25)
    want_s, want_i = brute_force(x, q, ids, 25)
    np.testing.assert_array_equal(got, want_i)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-5)


def test_fewer_vectors_than_k_are_padded(data):
    x, ids, q = data
    scores, got = exact_search(q[:2], [(ids[:3], x[:3])], 5)
    assert got.shape == (2, 5) and (got[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()


def test_merge_keeps_the_best_and_breaks_ties_by_id():
    a = (np.array([[2.0, 1.0]]), np.array([[9, 4]]))
    b = (np.array([[2.0, 0.5]]), np.array([[3, -1]]))
    s, i = merge_topk([a, b], 3)
    assert i.tolist() == [[3, 9, 4]] and s.tolist() == [[2.0, 2.0, 1.0]]


def test_index_over_blocks_trains_on_a_sample_and_maps_ids(data):
    x, ids, q = data
    blocks = lambda: ((ids[i : i + 300], x[i : i + 300]) for i in range(0, 1000, 300))  # noqa: E731
    index = build_block_index(blocks, 1000, IndexConfig(factory="IVF8,Flat", nprobe=8, device="cpu", train_size=400))
    _, got = index.search(q, 10)
    np.testing.assert_array_equal(got, brute_force(x, q, ids, 10)[1])  # every list probed: exact
    approx = build_block_index(blocks, 1000, IndexConfig(factory="IVF8,Flat", nprobe=1, device="cpu"))
    r = recall_at_k(approx.search(q, 10)[1], got)
    assert 0.2 < r < 1.0


def test_recall_at_k_by_hand():
    assert recall_at_k(np.array([[1, 2, 3], [4, -1, -1]]), np.array([[3, 2, 9], [4, 5, -1]])) == pytest.approx(
        (2 / 3 + 1 / 2) / 2)


@pytest.mark.parametrize("n_gpu,local_rank,local_world,want", [
    (0, 0, 1, []),             # no GPU: CPU
    (4, 0, 1, [0, 1, 2, 3]),   # one process serves the node: every GPU (replicated or sharded)
    (4, 2, 4, [2]),            # one process per GPU: each its own device, never every GPU
    (2, 3, 4, [1]),            # more processes than GPUs: shared round robin
    (8, 5, 8, [5]),
])
def test_gpu_placement(n_gpu, local_rank, local_world, want):
    assert gpu_devices(n_gpu, local_rank, local_world) == want


def test_auto_warns_when_cuda_is_there_but_faiss_has_no_gpu(monkeypatch, caplog):
    from dr.index import faiss_index

    monkeypatch.setattr(faiss_index, "gpu_count", lambda: 0)
    monkeypatch.setattr(faiss_index, "_cuda_present", lambda: True)
    monkeypatch.setattr(faiss_index, "_WARNED", set())
    assert not faiss_index.use_gpu(IndexConfig(device="auto"))
    assert "no GPU support" in caplog.text and caplog.records[-1].levelname == "WARNING"
    with pytest.raises(RuntimeError, match="faiss sees no GPU"):
        faiss_index.use_gpu(IndexConfig(device="gpu"))


def test_faiss_build_names_the_active_build():
    from dr.index import faiss_build

    assert "CPU-only build" in faiss_build() or "GPU build" in faiss_build()


@pytest.mark.gpu
def test_index_over_blocks_on_a_gpu_equals_exact_search(data):
    from dr.index.faiss_index import gpu_count

    if gpu_count() == 0:
        pytest.skip("faiss sees no GPU")
    x, ids, q = data
    blocks = lambda: ((ids[i : i + 300], x[i : i + 300]) for i in range(0, 1000, 300))  # noqa: E731
    gpu = build_block_index(blocks, 1000, IndexConfig(factory="Flat", device="gpu"), devices=[0])
    assert gpu.index.on_gpu
    np.testing.assert_array_equal(gpu.search(q, 10)[1], exact_search(q, blocks(), 10)[1])


def test_missing_faiss_says_how_to_install_it(monkeypatch):
    import importlib

    from dr.index import _faiss

    real = importlib.import_module

    def no_faiss(name, *a, **kw):
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real(name, *a, **kw)

    monkeypatch.setattr(_faiss._LazyFaiss, "_module", None)
    monkeypatch.setattr(_faiss.importlib, "import_module", no_faiss)
    with pytest.raises(ImportError, match=r"pip install 'dr\[cpu\]'.*'dr\[gpu\]'"):
        _faiss.faiss.IndexFlatIP
