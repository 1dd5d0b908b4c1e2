"""Measuring an index against exact search: the build report every manifest records, and the
ground truth (brute force, in chunks) that benches and tests compare an index with."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import faiss
import numpy as np
from whatart.retrieval_service.index import vector_index

log = logging.getLogger(__name__)

RECALL_QUERIES = 1000
RECALL_QUERY_SIMILARITY = 0.9
"""Build-time recall is measured with stored vectors perturbed to this cosine similarity,
about what a distorted copy keeps of its original (a vector's own copy would be too easy)."""


@dataclass(frozen=True)
class IndexReport:
    """Stored in the manifest: what was built and how well it agrees with exact search."""

    factory: str
    probes: int
    vectors: int
    bytes: int
    build_s: float
    recall_at_1: float
    recall_at_5: float
    recall_queries: int

    def to_dict(self) -> dict:
        return asdict(self)


def perturbed_queries(vectors: np.ndarray, n: int, similarity: float, seed: int = 0) -> np.ndarray:
    """n stored vectors pushed, each in a random direction, to cosine `similarity` with the original."""
    rng = np.random.default_rng(seed)
    picked = np.asarray(vectors[np.sort(rng.choice(len(vectors), min(n, len(vectors)), replace=False))], dtype=np.float32)
    noise = rng.standard_normal(picked.shape).astype(np.float32)
    noise -= (noise * picked).sum(1, keepdims=True) * picked  # orthogonal to each vector
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return similarity * picked + np.sqrt(1 - similarity**2) * noise


def exact_top_ids(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, chunk: int = 131072) -> np.ndarray:
    """Ground truth: the ids of the k best vectors per query by brute force, in chunks (the
    vectors may be a memory-mapped file larger than RAM)."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(vectors), chunk):
        scores = queries @ np.asarray(vectors[start : start + chunk], dtype=np.float32).T
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        merged_ids = np.concatenate([best_ids, ids[start + top]], axis=1)
        order = np.argsort(-merged_scores, axis=1)[:, :k]
        best_scores, best_ids = np.take_along_axis(merged_scores, order, 1), np.take_along_axis(merged_ids, order, 1)
    return best_ids


def recall_against_exact(found_ids: Callable[[np.ndarray, int], np.ndarray], vectors: np.ndarray, ids: np.ndarray) -> tuple[float, float]:
    """recall@1 (the exact first id is the index's first) and recall@5 (it is among the
    index's first five), over RECALL_QUERIES stored vectors perturbed to
    RECALL_QUERY_SIMILARITY; `found_ids(queries, k)` are the ids the measured index finds."""
    queries = perturbed_queries(vectors, RECALL_QUERIES, RECALL_QUERY_SIMILARITY)
    truth = exact_top_ids(vectors, ids, queries, 1)[:, 0]
    found = found_ids(queries, 5)
    return float(np.mean(found[:, 0] == truth)), float(np.mean((found == truth[:, None]).any(axis=1)))


def build_and_measure(vectors: np.ndarray, ids: np.ndarray, plan: vector_index.IndexPlan) -> tuple[faiss.Index, IndexReport]:
    """Build the planned index and measure its recall against exact search, for the manifest."""
    started = time.perf_counter()
    index = vector_index.build_index(vectors, ids, plan)
    return index, _report(index, vectors, ids, plan, time.perf_counter() - started)


def refill_and_measure(
    trained: faiss.Index, vectors: np.ndarray, ids: np.ndarray, plan: vector_index.IndexPlan
) -> tuple[faiss.Index, IndexReport]:
    """The trained parts of `trained` (PCA, IVF lists) over new contents: a changed gallery
    is published without training again."""
    started = time.perf_counter()
    index = vector_index.empty_like(trained)
    vector_index.add_vectors(index, vectors, ids)
    vector_index.set_probes(index, plan)
    return index, _report(index, vectors, ids, plan, time.perf_counter() - started)


def _report(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, plan: vector_index.IndexPlan, seconds: float) -> IndexReport:
    if plan.kind == vector_index.EXACT:
        recall = (1.0, 1.0)
    else:
        recall = recall_against_exact(lambda queries, k: vector_index.search(index, queries, k)[1], vectors, ids)
    report = IndexReport(plan.factory, plan.probes, int(index.ntotal), int(faiss.serialize_index(index).nbytes), round(seconds, 2),
                         round(recall[0], 4), round(recall[1], 4), min(RECALL_QUERIES, len(vectors)))
    log.info("index %s over %d vectors: %.1f MB, built in %.1f s, recall@1 %.3f / @5 %.3f against exact",
             report.factory, report.vectors, report.bytes / 2**20, seconds, *recall)
    return report
