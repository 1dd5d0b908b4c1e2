"""`whatart remove ID...`: publish a version of the gallery without some artworks.

Nothing is re-encoded: the kept artworks' vectors, local features and metadata are read
from the current version and published as a new one (gallery.publish, atomic), with the
calibration carried over. A running service picks it up (reloader.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from whatart.retrieval_service.calibration import CALIBRATION_FILE, Calibration
from whatart.retrieval_service.gallery import VECTORS, Gallery, GalleryError, publish
from whatart.retrieval_service.vector_index import read_index_vectors


@dataclass(frozen=True)
class RemovalReport:
    removed: int
    artworks: int
    seconds: float
    version_dir: Path


def remove_artworks(index_dir: Path, artwork_ids: list[str]) -> RemovalReport:
    """Refuses (changing nothing) when an id is unknown or nothing would be left."""
    started = time.perf_counter()
    gallery = Gallery.load(index_dir)
    try:
        rows = {artwork_id: gallery.metadata.row_id_of(artwork_id) for artwork_id in artwork_ids}
        unknown = [artwork_id for artwork_id, row in rows.items() if row is None]
        if unknown:
            raise GalleryError(f"not in the gallery at {index_dir}: {', '.join(unknown)} (nothing was removed)")
        kept = np.setdiff1d(np.arange(len(gallery)), [r for r in rows.values() if r is not None])
        if len(kept) == 0:
            raise GalleryError(f"removing {len(rows)} artworks would leave the gallery at {index_dir} empty (nothing was removed)")
        manifest = gallery.manifest
        views = len(manifest.gallery_blurs)
        # read again from the file: the gallery's own copy may live on a GPU
        vectors, _ = read_index_vectors(faiss.read_index(str(gallery.directory / VECTORS)))
        vectors = vectors.reshape(len(gallery), views, -1)[kept]
        everything = gallery.metadata.in_row_order()
        artworks = [everything[r] for r in kept]
        features = [gallery.local_features(int(r)) for r in kept]
        version = publish(index_dir, manifest.model, artworks, vectors, features, manifest.local_features,
                          tuple(manifest.gallery_blurs), manifest.source)
        if (gallery.directory / CALIBRATION_FILE).exists():
            Calibration.load(gallery.directory, 0).save(version)
    finally:
        gallery.close()
    return RemovalReport(len(rows), len(artworks), time.perf_counter() - started, version)
