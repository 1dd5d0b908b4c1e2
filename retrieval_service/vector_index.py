"""The FAISS index: exact inner-product search over unit vectors (cosine similarity)."""

from __future__ import annotations

import logging
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)


def build_index(vectors: np.ndarray) -> faiss.Index:
    """Exact search; row i of `vectors` gets id i (the metadata row id)."""
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.arange(len(vectors), dtype=np.int64))
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


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids), each [n_queries, k]; ids are -1 where the gallery has fewer than k."""
    k = min(k, index.ntotal)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
