"""The FAISS index: exact inner-product search over unit vectors (cosine similarity)."""

from __future__ import annotations

import logging
from pathlib import Path

import faiss
import numpy as np

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
