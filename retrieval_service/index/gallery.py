"""Loading and searching one gallery version: its files checked against the manifest, its
vectors searched through a vector store, its metadata, local features read on demand."""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import faiss
import numpy as np
from whatart.retrieval_service.features.local_features import LocalFeatures
from whatart.retrieval_service.index import milvus_store, vector_index, vector_store
from whatart.retrieval_service.index.layout import (
    EMBEDDINGS,
    FEATURE_COLOURS,
    FEATURE_DESCRIPTORS,
    FEATURE_OFFSETS,
    FEATURE_POINTS,
    FORMAT_VERSION,
    MANIFEST,
    METADATA,
    SHARP_INDEX_CHUNK,
    VECTORS,
    GalleryError,
    Manifest,
    file_sha256,
    unpack_features,
)
from whatart.retrieval_service.index.metadata import Artwork, MetadataFilter, MetadataStore
from whatart.retrieval_service.index.milvus_store import MilvusConnection


class Gallery:
    """A loaded, verified, read-only gallery version."""

    def __init__(self, directory: Path, manifest: Manifest, vectors: vector_store.VectorStore, metadata: MetadataStore) -> None:
        self.directory = directory
        self.manifest = manifest
        self.vectors = vectors
        self.metadata = metadata
        # memory-mapped: start-up stays fast and only the pages of verified candidates are read
        self._offsets = np.load(directory / FEATURE_OFFSETS)
        self._points = _random_access(np.load(directory / FEATURE_POINTS, mmap_mode="r"))
        self._descriptors = _random_access(np.load(directory / FEATURE_DESCRIPTORS, mmap_mode="r"))
        self._colours = np.load(directory / FEATURE_COLOURS)
        self.embeddings = np.load(directory / EMBEDDINGS, mmap_mode="r")
        """float16 [artworks, views, dim], memory-mapped."""
        self._sharp_index: vector_store.FaissStore | None = None

    @classmethod
    def load(cls, index_dir: Path, milvus: MilvusConnection | None = None) -> Gallery:
        """Open the current version, refusing one whose files do not match its manifest.
        `milvus`: how to reach the Milvus of a Milvus-backed version (default: the URI it
        recorded at ingest, without a token)."""
        current = index_dir / "current"
        if not current.exists():
            raise GalleryError(
                f"no gallery at {index_dir} (no {current}): build one with `whatart ingest SOURCE --index {index_dir}`"
            )
        directory = current.resolve()
        repair = f"rebuild it with `whatart ingest SOURCE --index {index_dir}`"
        try:
            text = (directory / MANIFEST).read_text()
            found_format = json.loads(text).get("format")
            if found_format != FORMAT_VERSION:
                raise GalleryError(f"{directory} has index format {found_format}, this whatart reads {FORMAT_VERSION}; {repair}")
            manifest = Manifest.from_json(text)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise GalleryError(f"the manifest of {directory} is unreadable ({error}); {repair}") from None
        for name, expected in manifest.files.items():
            path = directory / name
            if not path.exists() or file_sha256(path) != expected:
                raise GalleryError(f"{path} is missing or does not match its checksum in the manifest; {repair}")
        metadata = MetadataStore(directory / METADATA)
        views = len(manifest.gallery_blurs)
        try:
            if manifest.backend == vector_store.MILVUS:
                recorded = manifest.index["milvus"]
                store = milvus_store.MilvusStore(milvus or MilvusConnection(recorded["uri"]), recorded["collection"], views)
            else:
                store = vector_store.open_faiss(directory / VECTORS, manifest.index_plan, views, metadata.row_ids_matching)
        except BaseException:
            metadata.close()  # a reloader that refuses version after version must not pile up connections
            raise
        gallery = cls(directory, manifest, store, metadata)
        counts = {
            "manifest": manifest.count,
            "vectors per view": len(store) / views,
            "metadata": gallery.metadata.count(),
            "local features": len(gallery._offsets) - 1,
            "colours": len(gallery._colours),
            "embeddings": len(gallery.embeddings),
        }
        if len(set(counts.values())) != 1:
            gallery.close()
            raise GalleryError(f"{directory} is inconsistent ({counts}); {repair}")
        return gallery

    def __len__(self) -> int:
        return self.manifest.count

    def search(self, views: np.ndarray, k: int) -> list[tuple[Artwork, float, int]]:
        """The k artworks most similar to any view of one query (rows of `views`), each with
        its best cosine similarity over all query and gallery views and its row id, best first."""
        return self.search_many([views], k)[0]

    def build_sharp_index(self) -> bool:
        """Index each artwork's sharpest view alone, exactly, for `search_many(sharp_only=True)`:
        gallery-quality images need no blurred views, and an exact search costs one pass over
        the vectors (memory-bound), so a third of them (three blur levels) is a third of the
        cost. Only for exact FAISS plans: a compressed index would need its own training, and
        Milvus searches elsewhere. Returns whether it was built."""
        if self.manifest.backend != vector_store.FAISS or self.manifest.index_plan.kind != vector_index.EXACT:
            return False
        sharpest = int(np.argmin(self.manifest.gallery_blurs))
        index = faiss.IndexFlatIP(self.embeddings.shape[2])
        for start in range(0, len(self.embeddings), SHARP_INDEX_CHUNK):
            index.add(np.ascontiguousarray(self.embeddings[start : start + SHARP_INDEX_CHUNK, sharpest], dtype=np.float32))
        self._sharp_index = vector_store.FaissStore(index, 1, "Flat (sharpest views)", self.metadata.row_ids_matching)
        return True

    def search_many(self, queries: list[np.ndarray], k: int, sharp_only: bool = False,
                    where: MetadataFilter | None = None) -> list[list[tuple[Artwork, float, int]]]:
        """`search` for several queries at once: one index search, one metadata lookup.
        `sharp_only`: against each artwork's sharpest view only (needs `build_sharp_index`).
        `where`: only among the artworks that pass this filter."""
        return self.with_metadata(self.rank_many(queries, k, sharp_only, where))

    def rank_many(self, queries: list[np.ndarray], k: int, sharp_only: bool = False,
                  where: MetadataFilter | None = None) -> list[list[tuple[int, float]]]:
        """The vector search of `search_many`: (row id, similarity) per query, best first."""
        if sharp_only and self._sharp_index is None:
            raise GalleryError("sharp-view search needs build_sharp_index() (an exact index plan) first")
        return vector_store.best_per_artwork(self._sharp_index if sharp_only else self.vectors, queries, k, where)

    def with_metadata(self, ranked: list[list[tuple[int, float]]]) -> list[list[tuple[Artwork, float, int]]]:
        """`rank_many`'s results joined with their artworks' metadata (one lookup for all)."""
        found = self.metadata.by_row_ids({row_id for per_query in ranked for row_id, _ in per_query})
        return [[(found[row_id], score, row_id) for row_id, score in per_query] for per_query in ranked]

    def colours(self, row_ids: list[int]) -> np.ndarray:
        """float32 [n, 6] colour signatures of these artworks (features/colour.py)."""
        return self._colours[row_ids]

    def local_features(self, row_id: int) -> LocalFeatures:
        start, end = int(self._offsets[row_id]), int(self._offsets[row_id + 1])
        descriptors = np.asarray(self._descriptors[start:end]) if end > start else None
        return LocalFeatures(np.asarray(self._points[start:end], dtype=np.float32), descriptors, self._colours[row_id])

    def contents(self) -> tuple[list[Artwork], np.ndarray, list[LocalFeatures]]:
        """Everything needed to publish this gallery again (changed): artworks in row order,
        float32 embeddings [artworks, views, dim], local features."""
        artworks = self.metadata.in_row_order()
        packed = {"offsets": self._offsets, "points": np.asarray(self._points), "descriptors": np.asarray(self._descriptors),
                  "colours": self._colours}
        return artworks, np.asarray(self.embeddings, dtype=np.float32), unpack_features(packed)

    def close(self) -> None:
        self.vectors.close()
        self.metadata.close()


def _random_access(array: np.memmap) -> np.memmap:
    """Fault in only the pages a candidate's features are on. By default each fault reads
    ahead (8 MB on the benchmark host) and maps whole huge pages: verifying ~2,600 candidates
    of a 10^6-work index mapped 5.6 GB of its 9 GB of features into the service."""
    if array.size:  # an empty array is not mapped
        array._mmap.madvise(mmap.MADV_RANDOM)
    return array

