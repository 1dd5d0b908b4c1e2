"""A gallery on disk: vectors + metadata + manifest, published and loaded as one unit.

Layout of an index directory::

    <index_dir>/current -> versions/<stamp>     (symlink, swapped atomically)
    <index_dir>/versions/<stamp>/manifest.json  (model identity, count, file checksums)
                                 vectors.faiss
                                 metadata.sqlite

A writer builds a complete new version beside the old one and then replaces the
``current`` link with one rename, so a reader (or a crash) sees either the old gallery or
the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from whatart.retrieval_service import vector_index
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.metadata import Artwork, MetadataStore, write_metadata
from whatart.retrieval_service.model_contract import ModelIdentity

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
METADATA = "metadata.sqlite"
VERSIONS_KEPT = 2


class GalleryError(WhatartError):
    """The index directory is missing, incomplete or inconsistent; the message says how to fix it."""


@dataclass(frozen=True)
class Manifest:
    format: int
    model: ModelIdentity
    count: int
    source: str
    created_at: str
    files: dict[str, str]
    """file name -> sha256"""

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "model": asdict(self.model)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(**{**data, "model": ModelIdentity.from_dict(data["model"])})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish(index_dir: Path, identity: ModelIdentity, artworks: list[Artwork], vectors: np.ndarray, source: str) -> Path:
    """Write a new gallery version and make it current in one atomic step."""
    if len(artworks) != len(vectors):
        raise ValueError(f"{len(artworks)} artworks but {len(vectors)} vectors")
    if vectors.ndim != 2 or vectors.shape[1] != identity.dim:
        raise ValueError(f"vectors of shape {vectors.shape} do not match the model's dimension {identity.dim}")
    versions = index_dir / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    now_ns = time.time_ns()  # names sort in publication order (pruning relies on it)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns / 1e9)) + f".{now_ns % 10**9:09d}"
    staging = versions / f".{stamp}.partial"
    staging.mkdir()
    vector_index.save_index(vector_index.build_index(vectors), staging / VECTORS)
    count = write_metadata(staging / METADATA, artworks)
    manifest = Manifest(
        format=FORMAT_VERSION,
        model=identity,
        count=count,
        source=source,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        files={name: _sha256(staging / name) for name in (VECTORS, METADATA)},
    )
    (staging / MANIFEST).write_text(manifest.to_json())
    _fsync_tree(staging)
    final = versions / stamp
    staging.rename(final)
    link = index_dir / f".current-{stamp}"
    link.symlink_to(Path("versions") / stamp)
    os.replace(link, index_dir / "current")
    _prune(versions, keep=final)
    return final


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(versions: Path, keep: Path) -> None:
    """Remove old versions and abandoned partial ones, keeping the newest few."""
    finished = sorted((p for p in versions.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    for old in finished[:-VERSIONS_KEPT]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    for partial in versions.glob(".*.partial"):
        if partial != keep:
            shutil.rmtree(partial, ignore_errors=True)


class Gallery:
    """A loaded, verified, read-only gallery version."""

    def __init__(self, directory: Path, manifest: Manifest, index: faiss.Index, metadata: MetadataStore) -> None:
        self.directory = directory
        self.manifest = manifest
        self.index = index
        self.metadata = metadata

    @classmethod
    def load(cls, index_dir: Path) -> Gallery:
        """Open the current version, refusing one whose files do not match its manifest."""
        current = index_dir / "current"
        if not current.exists():
            raise GalleryError(
                f"no gallery at {index_dir} (no {current}): build one with `whatart ingest SOURCE --index {index_dir}`"
            )
        directory = current.resolve()
        repair = f"rebuild it with `whatart ingest SOURCE --index {index_dir}`"
        try:
            manifest = Manifest.from_json((directory / MANIFEST).read_text())
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise GalleryError(f"the manifest of {directory} is unreadable ({error}); {repair}") from None
        if manifest.format != FORMAT_VERSION:
            raise GalleryError(f"{directory} has index format {manifest.format}, this whatart reads {FORMAT_VERSION}; {repair}")
        for name, expected in manifest.files.items():
            path = directory / name
            if not path.exists() or _sha256(path) != expected:
                raise GalleryError(f"{path} is missing or does not match its checksum in the manifest; {repair}")
        index = vector_index.load_index(directory / VECTORS)
        metadata = MetadataStore(directory / METADATA)
        counts = {"manifest": manifest.count, "vectors": index.ntotal, "metadata": metadata.count()}
        if len(set(counts.values())) != 1:
            raise GalleryError(f"{directory} is inconsistent ({counts}); {repair}")
        return cls(directory, manifest, index, metadata)

    def __len__(self) -> int:
        return self.manifest.count

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[Artwork, float]]]:
        """For each query, the k nearest artworks with their cosine similarity."""
        scores, ids = vector_index.search(self.index, queries, k)
        found = self.metadata.by_row_ids(int(i) for i in np.unique(ids) if i >= 0)
        return [
            [(found[int(i)], float(s)) for s, i in zip(row_scores, row_ids, strict=True) if i >= 0]
            for row_scores, row_ids in zip(scores, ids, strict=True)
        ]

    def close(self) -> None:
        self.metadata.close()
