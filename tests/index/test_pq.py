"""JPQ's product quantizer: faiss OPQ + PQ with trainable centroids."""
from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from dr.index.pq import ProductQuantizer, build_pq_index, load_pq_index
from dr.objectives.jpq import QuantizerConfig


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return unit(np.random.default_rng(0).standard_normal((600, 16)))


def quantizer(vectors, **kw) -> ProductQuantizer:
    cfg = QuantizerConfig(**{"subvectors": 4, "bits": 4, "train_size": 10_000, **kw})
    index = build_pq_index(vectors, cfg)
    return ProductQuantizer(index, [f"d{i}" for i in range(len(vectors))], "corpus-fp")


@pytest.mark.parametrize("opq,bits", [(True, 4), (False, 8), (True, 5)])
def test_reconstruction_equals_faiss_decoding(vectors, opq, bits):
    pq = quantizer(vectors, opq=opq, bits=bits)
    ours = pq.reconstruct(torch.arange(len(vectors))).detach().numpy()
    inner = faiss.downcast_index(pq.ivf)
    codes = faiss.rev_swig_ptr(inner.invlists.get_codes(0), len(vectors) * inner.code_size)
    theirs = inner.pq.decode(codes.reshape(len(vectors), -1).copy())  # rotated space, coarse folded (zero)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    # reconstructions approximate the rotated vectors
    rotated = vectors @ pq.rotation.numpy().T if opq else vectors
    assert np.mean(np.sum((ours - rotated) ** 2, 1)) < 0.5 * np.mean(np.sum(rotated ** 2, 1))


def test_score_is_differentiable_in_the_centroids_by_hand(vectors):
    pq = quantizer(vectors, opq=False)
    q = torch.from_numpy(unit(np.random.default_rng(1).standard_normal((1, 16))))
    rows = torch.tensor([[3, 7]])
    pq.score(q, rows).sum().backward()
    grad = pq.centroids.grad  # (M, K, dsub): d(sum of scores)/d centroid = sum of the query sub-vectors using it
    expected = torch.zeros_like(grad)
    for r in (3, 7):
        for m in range(pq.M):
            expected[m, pq.codes[r, m]] += q[0, m * pq.dsub : (m + 1) * pq.dsub]
    torch.testing.assert_close(grad, expected)
    assert grad.abs().sum() > 0 and (grad != 0).any(dim=-1).sum() <= 2 * pq.M


def test_exported_index_gives_the_models_topk_and_scores(vectors, tmp_path):
    pq = quantizer(vectors)
    with torch.no_grad():  # as if trained: move every centroid
        pq.centroids.add_(0.05 * torch.randn_like(pq.centroids, generator=torch.Generator().manual_seed(0)))
    q = unit(np.random.default_rng(2).standard_normal((7, 16)))
    path = pq.export(tmp_path / "export")
    plain = faiss.read_index(str(path))  # plain faiss, no dr code
    scores, ids = plain.search(q, 10)
    full = pq.score(torch.from_numpy(q), torch.arange(len(vectors)).expand(7, -1)).detach().numpy()
    order = np.argsort(-full, axis=1, kind="stable")[:, :10]
    np.testing.assert_allclose(scores, np.take_along_axis(full, order, 1), atol=1e-5)
    np.testing.assert_array_equal(np.sort(ids, 1), np.sort(order, 1))
    index, docids, fp = load_pq_index(path)
    assert docids == [f"d{i}" for i in range(len(vectors))] and fp == "corpus-fp" and index.ntotal == len(vectors)
    # the live search uses the moved centroids too
    live_scores, live_ids = pq.search(q, 10)
    np.testing.assert_allclose(live_scores, scores, atol=1e-6)


def test_training_moves_search_results(vectors):
    pq = quantizer(vectors)
    q = unit(np.random.default_rng(3).standard_normal((4, 16)))
    _, before = pq.search(q, 5)
    with torch.no_grad():
        pq.centroids.mul_(-1.0)  # flips every inner product: the top 5 become the bottom 5
    pq.invalidate()
    _, after = pq.search(q, 5)
    assert not np.array_equal(before, after)


def test_bad_settings_are_clear_errors(vectors):
    with pytest.raises(ValueError, match="must divide the embedding size"):
        build_pq_index(vectors, QuantizerConfig(subvectors=5, bits=4))
    with pytest.raises(ValueError, match="needs at least that many vectors"):
        build_pq_index(vectors[:100], QuantizerConfig(subvectors=4, bits=8))
    with pytest.raises(ValueError, match="set quantizer.opq=false"):
        build_pq_index(vectors[:100], QuantizerConfig(subvectors=4, bits=4))
    with pytest.raises(ValueError, match="bits"):
        QuantizerConfig(bits=0)
    with pytest.raises(FileNotFoundError, match="export a jpq run first"):
        load_pq_index("/nonexistent/index.faiss")
