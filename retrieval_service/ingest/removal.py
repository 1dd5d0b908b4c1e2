"""`whatart remove ID...`: publish a version of the gallery without some artworks.

Nothing is re-encoded and nothing is trained again: the kept artworks' embeddings, local
features and metadata are read from the current version and published as a new one
(index/publish.py, atomic) into the current index's trained structure, with the calibration
carried over. A running service picks it up (reloader.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.layout import GalleryError
from whatart.retrieval_service.index.milvus_store import MilvusConnection
from whatart.retrieval_service.index.publish import republish


@dataclass(frozen=True)
class RemovalReport:
    removed: int
    artworks: int
    seconds: float
    version_dir: Path


def remove_artworks(index_dir: Path, artwork_ids: list[str], milvus: MilvusConnection | None = None) -> RemovalReport:
    """Refuses (changing nothing) when an id is unknown or nothing would be left. `milvus`:
    how to reach a Milvus-backed index's Milvus (Gallery.load)."""
    started = time.perf_counter()
    gallery = Gallery.load(index_dir, milvus)
    try:
        unknown = [artwork_id for artwork_id in artwork_ids if gallery.metadata.row_id_of(artwork_id) is None]
        if unknown:
            raise GalleryError(f"not in the gallery at {index_dir}: {', '.join(unknown)} (nothing was removed)")
        removed = set(artwork_ids)
        artworks, vectors, features = gallery.contents()
        kept = [row for row, artwork in enumerate(artworks) if artwork.id not in removed]
        if not kept:
            raise GalleryError(f"removing {len(removed)} artworks would leave the gallery at {index_dir} empty (nothing was removed)")
        version = republish(gallery, [artworks[r] for r in kept], vectors[kept], [features[r] for r in kept])
    finally:
        gallery.close()
    return RemovalReport(len(removed), len(kept), time.perf_counter() - started, version)
