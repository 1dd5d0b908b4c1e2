"""Likely duplicates: the same artwork twice in a gallery, found by embedding similarity.

Museum exports and aggregated datasets repeat works (a scan and a photo of the same
painting, one work under two ids). Ingest reports them and keeps both: merging would lose
metadata silently, and only a curator knows which record is right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from whatart.retrieval_service.index import vector_index

NEIGHBOURS = 4
SEARCH_MEMORY_MB = 4096.0
SEARCH_EXACT_MAX_VECTORS = 300_000


@dataclass(frozen=True)
class Duplicate:
    new_id: str
    existing_id: str
    """The earlier work: already in the gallery, or earlier in the same ingest."""
    similarity: float


def find_duplicates(existing: np.ndarray, new: np.ndarray, existing_ids: list[str], new_ids: list[str],
                    threshold: float) -> list[Duplicate]:
    """Each new vector (unit, [n, dim]) at least `threshold` similar to an existing one or to
    an earlier new one, paired with its most similar such work; each pair reported once."""
    if len(new) == 0:
        return []
    everything = np.concatenate([existing, new]).astype(np.float32)
    ids = np.arange(len(everything), dtype=np.int64)
    plan = vector_index.plan_index(len(everything), everything.shape[1], SEARCH_MEMORY_MB, SEARCH_EXACT_MAX_VECTORS)
    index = vector_index.build_index(everything, ids, plan)
    scores, found = vector_index.search(index, new, min(NEIGHBOURS, len(everything)))
    names = existing_ids + new_ids
    duplicates = []
    for position, (row_scores, row_found) in enumerate(zip(scores, found, strict=True)):
        own = len(existing) + position
        earlier = [(float(s), int(j)) for s, j in zip(row_scores, row_found, strict=True) if 0 <= j < own and s >= threshold]
        if earlier:
            similarity, match = max(earlier)
            duplicates.append(Duplicate(new_ids[position], names[match], round(similarity, 4)))
    return duplicates
