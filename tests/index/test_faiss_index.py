from __future__ import annotations

import faiss
import numpy as np
import pytest

from dr.index import IndexConfig, build_index, load_index


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    q = rng.standard_normal((50, 16)).astype(np.float32)
    return x, q


def brute_force(x, q, k):
    """Exact inner-product top-k with numpy (the independent ground truth)."""
    s = q @ x.T  # (Q, N)
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, axis=1), ids


def test_flat_equals_brute_force(data):
    x, q = data
    scores, ids = build_index(x, IndexConfig(factory="Flat", device="cpu", search_batch_size=7)).search(q, 10)
    want_s, want_i = brute_force(x, q, 10)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-5)


def test_ivf_with_every_list_probed_is_exact(data):
    x, q = data
    idx = build_index(x, IndexConfig(factory="IVF16,Flat", nprobe=16, device="cpu"))
    _, ids = idx.search(q, 10)
    np.testing.assert_array_equal(ids, brute_force(x, q, 10)[1])


def test_ivf_with_one_list_probed_is_approximate_but_close(data):
    x, q = data
    _, ids = build_index(x, IndexConfig(factory="IVF16,Flat", nprobe=1, device="cpu")).search(q, 10)
    exact = brute_force(x, q, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])
    assert 0.1 < recall < 1.0  # nprobe is applied: probing 1 of 16 lists misses some neighbours


def test_hnsw_recall(data):
    x, q = data
    _, ids = build_index(x, IndexConfig(factory="HNSW32", ef_search=256, device="cpu")).search(q, 10)
    exact = brute_force(x, q, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])
    assert recall >= 0.95


@pytest.mark.parametrize("factory", ["PQ4x4", "OPQ4,PQ4x4"])
def test_pq_scores_are_exact_on_the_reconstructed_vectors(data, factory):
    """PQ search is exact inner product against the decoded codes: check against that brute force."""
    x, q = data
    idx = build_index(x, IndexConfig(factory=factory, device="cpu"))
    scores, ids = idx.search(q, 5)
    # OPQ's rotation is orthogonal, so inner products in the rotated space equal those after decoding
    decoded = idx.index.sa_decode(idx.index.sa_encode(x))  # (N, H) in the input space
    full = q @ decoded.T  # (Q, N)
    np.testing.assert_allclose(scores, np.take_along_axis(full, ids, axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores[:, 0], full.max(axis=1), rtol=1e-4, atol=1e-4)


def test_save_and_load_round_trip(data, tmp_path):
    x, q = data
    idx = build_index(x, IndexConfig(factory="IVF8,Flat", nprobe=8, device="cpu"))
    idx.save(tmp_path / "a.faiss")
    back = load_index(tmp_path / "a.faiss", IndexConfig(factory="IVF8,Flat", nprobe=8, device="cpu"))
    s1, i1 = idx.search(q, 5)
    s2, i2 = back.search(q, 5)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2)
    assert faiss.read_index(str(tmp_path / "a.faiss")).ntotal == 3000


def test_k_larger_than_index_and_l2(data):
    x, q = data
    scores, ids = build_index(x[:3], IndexConfig(metric="l2", device="cpu")).search(q[:2], 10)
    assert ids.shape == (2, 3)
    d = ((q[:2, None, :] - x[None, :3, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(ids, np.argsort(d, axis=1))


def test_gpu_requested_without_gpu_is_an_error(data):
    if faiss.get_num_gpus() > 0:
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="no GPU"):
        build_index(data[0], IndexConfig(device="gpu"))


def test_cpu_placement_is_logged(data, caplog):
    caplog.set_level("INFO", logger="dr.index")
    build_index(data[0][:100], IndexConfig(device="auto"))
    assert any("on CPU" in r.message or "GPU" in r.message for r in caplog.records)


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="non-empty"):
        build_index(np.empty((0, 4), np.float32), IndexConfig())


@pytest.mark.gpu
def test_gpu_index_matches_cpu(data):
    x, q = data
    cpu = build_index(x, IndexConfig(device="cpu")).search(q, 10)
    gpu = build_index(x, IndexConfig(device="gpu")).search(q, 10)
    np.testing.assert_array_equal(cpu[1], gpu[1])
