"""The vector index: planning by size and memory, IVF recall against exact search, refills
without training, and the fitted distractors of `whatart bench index`."""

from __future__ import annotations

import numpy as np
import pytest
from whatart.retrieval_service.evaluation.distractors import EmbeddingModel, fidelity, lift
from whatart.retrieval_service.index import recall, vector_index
from whatart.retrieval_service.index.metadata import MetadataFilter
from whatart.retrieval_service.index.vector_index import EXACT, IVF, IndexPlan, plan_index
from whatart.retrieval_service.index.vector_store import FaissStore, best_per_artwork


def _no_filter(where: MetadataFilter) -> list[int]:
    raise AssertionError("no filter was given")


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors crowded around 50 centres, like embeddings grouped by style."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 50, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_small_galleries_get_exact_search_and_large_ones_an_ivf_within_budget() -> None:
    assert plan_index(45_000, 1280, 1024, 300_000).kind == EXACT
    assert plan_index(45_000, 1280, 1024, 300_000, kind="ivf").kind == IVF
    large = plan_index(1_000_000, 2048, 1024, 300_000)
    assert large.kind == IVF and large.factory.startswith(f"UPCA{large.reduced_dim},IVF{large.lists},")
    assert large.bytes_per_vector() * 1_000_000 + large.fixed_bytes() <= 1024 * 2**20
    assert plan_index(1_000_000, 2048, 512, 300_000).reduced_dim < large.reduced_dim, "less memory, fewer dimensions"
    with pytest.raises(ValueError, match="raise the memory budget"):
        plan_index(1_000_000, 2048, 50, 300_000)
    with pytest.raises(ValueError, match="index kind"):
        plan_index(10, 4, 1, 1, kind="hnsw")


def test_an_ivf_agrees_with_exact_search_and_refills_without_training() -> None:
    vectors = _clustered(20_000, 256)
    ids = np.arange(len(vectors)) // 2  # two views per artwork
    plan = IndexPlan(IVF, 256, reduced_dim=128, lists=256, probes=32)
    index, report = recall.build_and_measure(vectors, ids, plan)
    assert report.factory == "UPCA128,IVF256,PQ32x4fs,RefineSQ8" and report.vectors == 20_000
    assert report.recall_at_1 >= 0.9 and report.recall_at_5 >= report.recall_at_1
    refilled, again = recall.refill_and_measure(index, vectors[:10_000], ids[:10_000], plan)
    assert refilled.ntotal == 10_000 and index.ntotal == 20_000, "the refill is a copy"
    assert again.recall_at_1 >= 0.9
    [found] = best_per_artwork(FaissStore(refilled, 2, plan.factory, _no_filter), [vectors[:1]], k=3)
    assert found[0][0] == 0 and len({i for i, _ in found}) == 3


def test_a_filter_searches_only_the_allowed_vectors_of_an_ivf() -> None:
    vectors = _clustered(20_000, 256, seed=1)
    ids = np.arange(len(vectors)) // 2
    index = vector_index.build_index(vectors, ids, IndexPlan(IVF, 256, reduced_dim=128, lists=256, probes=64))
    allowed_rows = np.arange(1, 10_000, 3)
    positions = np.concatenate([allowed_rows * 2, allowed_rows * 2 + 1])
    scores, found = vector_index.search(index, vectors[:40], 10, allowed=vector_index.allow(positions))
    assert set(found.ravel().tolist()) <= set(allowed_rows.tolist())
    own = np.arange(40) // 2
    kept = np.isin(own, allowed_rows)
    assert kept.sum() >= 10 and (found[kept, 0] == own[kept]).all(), "an allowed vector's own artwork still comes first"
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_exact_top_ids_match_a_full_sort_across_chunks() -> None:
    vectors = _clustered(3_000, 32, seed=1)
    queries = recall.perturbed_queries(vectors, 20, 0.9)
    assert np.allclose((queries * queries).sum(1), 1, atol=1e-5)
    ids = np.arange(3_000)
    top = recall.exact_top_ids(vectors, ids, queries, 5, chunk=700)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :5]
    assert (top == expected).all()


def test_distractors_follow_the_real_embeddings_and_lifting_keeps_inner_products() -> None:
    real = _clustered(4_000, 64, seed=2)
    model = EmbeddingModel.fit(real, clusters=50)
    fake = model.sample(2_000, np.random.default_rng(0))
    assert fake.shape == (2_000, 64) and np.allclose(np.linalg.norm(fake, axis=1), 1, atol=1e-5)
    figures = fidelity(model, real)
    uniform = np.random.default_rng(1).standard_normal((500, 64))
    uniform_nearest = np.median((uniform / np.linalg.norm(uniform, axis=1, keepdims=True) @ real.T).max(axis=1))
    assert abs(figures["distractor_to_nearest_real_median"] - figures["real_to_nearest_real_median"]) < 0.15
    assert figures["distractor_to_nearest_real_median"] > uniform_nearest + 0.2, "far closer to real works than noise is"
    lifted = lift(real[:50], 96)
    assert lifted.shape == (50, 96) and np.allclose(lifted @ lifted.T, real[:50] @ real[:50].T, atol=1e-4)
    with pytest.raises(ValueError, match="at least 64"):
        lift(real, 32)
