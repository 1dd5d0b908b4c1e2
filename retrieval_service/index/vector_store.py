"""Where a gallery's vectors are searched: the one interface the gallery uses, with two
implementations, chosen per index at ingest (`WHATART_INDEX_BACKEND`) and recorded in its
manifest:

- ``faiss`` (default): an in-process FAISS index, a file of the gallery version (vector_index.py);
- ``milvus``: a collection in a Milvus server or cluster, or in embedded milvus-lite
  (milvus_store.py), for galleries that outgrow one machine's memory.

The results contract is the same for both: vectors are labelled with their artwork's row id
(the metadata store's key), scores are cosine similarities (inner products of unit
vectors), best first, padded with id -1, and a MetadataFilter restricts the search to the
artworks whose fields match before ranking (not by discarding results afterwards).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np
from whatart.retrieval_service.index import vector_index
from whatart.retrieval_service.index.metadata import MetadataFilter

FAISS = "faiss"
MILVUS = "milvus"
BACKENDS = (FAISS, MILVUS)


class VectorStore(Protocol):
    """A searchable set of gallery vectors, `views` per artwork."""

    description: str
    """for logs: what searches, e.g. the FAISS factory string or the Milvus collection"""
    views: int

    def __len__(self) -> int:
        """Vectors stored (artworks x views)."""
        ...

    def search(self, queries: np.ndarray, depth: int, where: MetadataFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, artwork row ids), each [queries, depth], best first, padded with id -1."""
        ...

    def close(self) -> None: ...


FILTERS_CACHED = 64
"""Selectors kept per FaissStore: a gallery is read-only, so a filter's selector never changes."""


class FaissStore:
    """A FAISS index in this process; filters become the row ids SQLite finds for them, as a
    selector built once per filter. `filtered_on`: the CPU copy that filtered searches use
    when `index` is on a GPU (FAISS's GPU indexes do not apply selectors)."""

    def __init__(self, index: faiss.Index, views: int, description: str, rows_matching: Callable[[MetadataFilter], list[int]],
                 filtered_on: faiss.Index | None = None) -> None:
        self.index = index
        self.views = views
        self.description = f"FAISS {description}"
        self._rows_matching = rows_matching
        self._filtered_on = index if filtered_on is None else filtered_on
        self._allowed = functools.lru_cache(maxsize=FILTERS_CACHED)(self._selector)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, depth: int, where: MetadataFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
        if where is None or not where.conditions():
            return vector_index.search(self.index, queries, depth)
        return vector_index.search(self._filtered_on, queries, depth, allowed=self._allowed(where))

    def _selector(self, where: MetadataFilter) -> faiss.IDSelector:
        rows = np.asarray(self._rows_matching(where), dtype=np.int64)
        # vectors were added artwork by artwork, `views` each (publish.publish)
        return vector_index.allow((rows[:, None] * self.views + np.arange(self.views)).ravel())

    def close(self) -> None:
        """Nothing to release: the index is garbage-collected with the gallery."""


def open_faiss(path: Path, plan: vector_index.IndexPlan, views: int, rows_matching: Callable[[MetadataFilter], list[int]]) -> FaissStore:
    on_cpu = vector_index.read_for_search(path, plan)
    return FaissStore(vector_index.on_search_device(on_cpu, plan), views, plan.factory, rows_matching, filtered_on=on_cpu)


def best_per_artwork(store: VectorStore, queries: list[np.ndarray], k: int,
                     where: MetadataFilter | None = None) -> list[list[tuple[int, float]]]:
    """For each query (rows: its views), the k row ids with the highest similarity to any of
    its views, best first; all queries in one search, which costs far less per row than one
    search each (exact 2048-d FAISS search here: 121 rows/s one at a time, 2,515/s 64 at once).

    Each view asks for k * views neighbours, enough for k distinct artworks even when every
    view of the same artworks comes back."""
    depth = min(k * store.views, len(store))
    if depth == 0:
        return [[] for _ in queries]
    scores, ids = store.search(np.concatenate(queries), depth, where)
    ranked, start = [], 0
    for views in queries:
        end = start + len(views)
        best: dict[int, float] = {}
        for score, artwork in zip(scores[start:end].ravel().tolist(), ids[start:end].ravel().tolist(), strict=True):
            if artwork >= 0 and score > best.get(artwork, -np.inf):
                best[artwork] = score
        ranked.append(sorted(best.items(), key=lambda item: -item[1])[:k])
        start = end
    return ranked
