"""The layout of a gallery version on disk: its file names, its manifest, and the packed
form of local features that the index files and ingest checkpoints share.

Layout of an index directory::

    <index_dir>/current -> versions/<stamp>     (symlink, swapped atomically)
    <index_dir>/versions/<stamp>/manifest.json  (model identity, count, index report, file checksums)
                                 vectors.faiss    (the FAISS index: one vector per artwork and gallery view;
                                                   with the Milvus backend, a collection instead: vector_store.py)
                                 embeddings.npy   (the same vectors exactly, float16, mmapped)
                                 metadata.sqlite
                                 features_*.npy   (local features for verification, mmapped)

A writer builds a complete new version beside the old one and then replaces the
``current`` link with one rename, so a reader (or a crash) sees either the old gallery or
the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.features.local_features import LocalFeatures
from whatart.retrieval_service.index import vector_index, vector_store
from whatart.retrieval_service.triton.model_contract import ModelIdentity

FORMAT_VERSION = 9
MANIFEST = "manifest.json"
SHARP_INDEX_CHUNK = 65536
VECTORS = "vectors.faiss"
# [artworks, views, dim] float16: exact similarities of candidates, and add/remove without re-encoding
EMBEDDINGS = "embeddings.npy"
METADATA = "metadata.sqlite"
# Local features of every artwork, concatenated; offsets[i]:offsets[i + 1] are row i's.
FEATURE_OFFSETS = "features_offsets.npy"
FEATURE_POINTS = "features_points.npy"
FEATURE_DESCRIPTORS = "features_descriptors.npy"
FEATURE_COLOURS = "features_colours.npy"
DESCRIPTOR_BYTES = 32
DATA_FILES = (EMBEDDINGS, METADATA, FEATURE_OFFSETS, FEATURE_POINTS, FEATURE_DESCRIPTORS, FEATURE_COLOURS)
"""Every version's files; a FAISS version has VECTORS too."""
VERSIONS_KEPT = 2
CARRIED_FILES = ("calibration.json",)
"""Files a changed gallery inherits from the version it changes (calibration.CALIBRATION_FILE)."""


class GalleryError(WhatartError):
    """The index directory is missing, incomplete or inconsistent; the message says how to fix it."""


@dataclass(frozen=True)
class Manifest:
    format: int
    model: ModelIdentity
    count: int
    gallery_blurs: list[float]
    """The views each artwork is indexed under (see views.gallery_views)."""
    local_features: str
    """How the stored local features were extracted (FeatureExtractor.description)."""
    source: str
    index: dict
    """Where the vectors are searched ("backend": faiss or milvus; faiss when absent, as
    before Milvus), the FAISS plan (vector_index.IndexPlan) or the Milvus collection, and the
    build report (recall.IndexReport)."""
    created_at: str
    files: dict[str, str]
    """file name -> sha256"""

    @property
    def backend(self) -> str:
        return self.index.get("backend", vector_store.FAISS)

    @property
    def index_plan(self) -> vector_index.IndexPlan:
        """The FAISS index's plan (FAISS versions only)."""
        return vector_index.IndexPlan(**self.index["plan"])

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "model": asdict(self.model)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(**{**data, "model": ModelIdentity.from_dict(data["model"])})


def file_sha256(path: Path) -> str:
    """Checksum of a file, read in blocks (index files; a packaged encoder's weights)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


PACKED_FEATURES = ("offsets", "points", "descriptors", "colours")


def pack_features(features: list[LocalFeatures]) -> dict[str, np.ndarray]:
    """Many artworks' local features as four arrays (offsets[i]:offsets[i + 1] are row i's),
    the layout of the index files and of ingest checkpoints."""
    offsets = np.zeros(len(features) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(f) for f in features])
    empty = np.empty((0, DESCRIPTOR_BYTES), np.uint8)
    return {
        "offsets": offsets,
        # float16: exact to 0.25 px on a <= 512 px image, far inside RANSAC's 6 px; half the bytes
        "points": np.concatenate([f.points for f in features] or [np.empty((0, 2))]).astype(np.float16),
        "descriptors": np.concatenate([f.descriptors if f.descriptors is not None else empty for f in features] or [empty]),
        "colours": np.array([f.colour for f in features], np.float32).reshape(len(features), -1),
    }


def unpack_features(packed: Mapping[str, np.ndarray]) -> list[LocalFeatures]:
    offsets = packed["offsets"]
    return [
        LocalFeatures(packed["points"][start:end].astype(np.float32), packed["descriptors"][start:end] if end > start else None,
                      packed["colours"][row])
        for row, (start, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True))
    ]
