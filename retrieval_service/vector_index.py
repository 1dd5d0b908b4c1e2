"""The FAISS index: exact inner-product search over unit vectors (cosine similarity)."""

from __future__ import annotations

import logging
from pathlib import Path

import faiss
import numpy as np

from whatart.retrieval_service.errors import WhatartError

log = logging.getLogger(__name__)


def build_index(vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    """Exact search over `vectors`, each labelled with its artwork's metadata row id (an
    artwork indexed under several views appears once per view, with the same id)."""
    index = faiss.IndexIDMap(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    return index


def save_index(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def load_index(path: Path) -> faiss.Index:
    """Read an index, moved to the GPU when this FAISS build sees one (logged either way)."""
    index = faiss.read_index(str(path))
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpus > 0:
        log.info("FAISS: searching on %d GPU(s)", gpus)
        return faiss.index_cpu_to_all_gpus(index)
    log.info("FAISS: searching on CPU (%s build, no GPU visible)", "GPU" if hasattr(faiss, "StandardGpuResources") else "CPU")
    return index


def search_best(index: faiss.Index, views: np.ndarray, k: int, vectors_per_id: int) -> list[tuple[int, float]]:
    """The k ids with the highest similarity to any of the query's views, best first.

    Each view asks for k * vectors_per_id neighbours, enough for k distinct ids even when
    every view of the same artworks comes back."""
    depth = min(k * vectors_per_id, index.ntotal)
    scores, ids = index.search(np.ascontiguousarray(views, dtype=np.float32), depth)
    best: dict[int, float] = {}
    for score, artwork in zip(scores.ravel().tolist(), ids.ravel().tolist(), strict=True):
        if artwork >= 0 and score > best.get(artwork, -np.inf):
            best[artwork] = score
    return sorted(best.items(), key=lambda item: -item[1])[:k]


def best_similarities(index: faiss.Index, views: np.ndarray, ids: list[int], vectors_per_id: int) -> list[float]:
    """For each id, the highest similarity between any query view and any of its vectors.
    Vectors were added id-major (id i's views at positions i * vectors_per_id + v), which
    is how the exact index stores them, so they are reconstructed by position."""
    if not ids:
        return []
    stored = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    positions = [i * vectors_per_id + v for i in ids for v in range(vectors_per_id)]
    vectors = np.stack([stored.reconstruct(p) for p in positions]).reshape(len(ids), vectors_per_id, -1)
    similarities = np.einsum("qd,ivd->iqv", np.asarray(views, dtype=np.float32), vectors)
    return similarities.reshape(len(ids), -1).max(axis=1).tolist()


def read_index_vectors(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, ids) of an IndexIDMap over a flat index, in insertion order; ids repeat
    where an artwork has several vectors."""
    if not hasattr(index, "id_map"):
        raise WhatartError(f"cannot read vectors back from a {type(index).__name__} index; rebuild it with `whatart ingest`")
    flat = faiss.downcast_index(index.index)
    return flat.reconstruct_n(0, flat.ntotal), faiss.vector_to_array(index.id_map)
