"""A gallery on disk: vectors + metadata + manifest, published and loaded as one unit.

Layout of an index directory::

    <index_dir>/current -> versions/<stamp>     (symlink, swapped atomically)
    <index_dir>/versions/<stamp>/manifest.json  (model identity, count, index report, file checksums)
                                 vectors.faiss    (the FAISS index: one vector per artwork and gallery view;
                                                   with the Milvus backend, a collection instead: vector_store.py)
                                 embeddings.npy   (the same vectors exactly, float16, mmapped)
                                 metadata.sqlite
                                 features_*.npy   (local features for verification, mmapped)
                                 votes.faiss      (every local descriptor, for the vote shortlist)

A writer builds a complete new version beside the old one and then replaces the
``current`` link with one rename, so a reader (or a crash) sees either the old gallery or
the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from whatart.retrieval_service import feature_votes, milvus_store, vector_index, vector_store
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.metadata import Artwork, MetadataFilter, MetadataStore, write_metadata
from whatart.retrieval_service.milvus_store import MilvusConnection, MilvusTarget
from whatart.retrieval_service.model_contract import ModelIdentity
from whatart.retrieval_service.verification import LocalFeatures

log = logging.getLogger(__name__)

FORMAT_VERSION = 8
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
VOTES = "votes.faiss"
DESCRIPTOR_BYTES = 32
DATA_FILES = (EMBEDDINGS, METADATA, FEATURE_OFFSETS, FEATURE_POINTS, FEATURE_DESCRIPTORS, FEATURE_COLOURS, VOTES)
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
    build report (vector_index.IndexReport)."""
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


def publish(
    index_dir: Path,
    identity: ModelIdentity,
    artworks: list[Artwork],
    vectors: np.ndarray,
    features: list[LocalFeatures],
    features_description: str,
    gallery_blurs: tuple[float, ...],
    source: str,
    plan: vector_index.IndexPlan | None = None,
    trained: faiss.Index | None = None,
    carried_files: tuple[Path, ...] = (),
    milvus: MilvusTarget | None = None,
) -> Path:
    """Write a new gallery version and make it current in one atomic step.

    `vectors` is [n_artworks, n_views, dim]: one embedding per artwork and gallery view.
    `plan`: the vector index to build (default: exact search). `trained`: an index of the
    previous version whose trained parts (PCA, IVF lists) are reused, so a changed gallery is
    published without training again. `carried_files` (e.g. the calibration) are copied into
    the new version before it becomes current. `milvus`: write the vectors into a new Milvus
    collection there instead of a FAISS index (`plan` and `trained` are then unused)."""
    if vectors.ndim != 3 or vectors.shape[:2] != (len(artworks), len(gallery_blurs)) or vectors.shape[2] != identity.dim:
        raise ValueError(
            f"vectors of shape {vectors.shape} do not fit {len(artworks)} artworks x {len(gallery_blurs)} views "
            f"x the model's dimension {identity.dim}"
        )
    versions = index_dir / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    now_ns = time.time_ns()  # names sort in publication order (pruning relies on it)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns / 1e9)) + f".{now_ns % 10**9:09d}"
    staging = versions / f".{stamp}.partial"
    staging.mkdir()
    if milvus is None:
        index_entry = _write_faiss(staging, vectors, plan or vector_index.IndexPlan(vector_index.EXACT, identity.dim), trained)
    else:
        index_entry = _write_milvus(milvus, milvus_store.collection_name(stamp), vectors, artworks)
    np.save(staging / EMBEDDINGS, vectors.astype(np.float16))
    for carried in carried_files:
        shutil.copyfile(carried, staging / carried.name)
    count = write_metadata(staging / METADATA, artworks)
    _write_features(staging, features)
    manifest = Manifest(
        format=FORMAT_VERSION,
        model=identity,
        count=count,
        gallery_blurs=list(gallery_blurs),
        local_features=features_description,
        source=source,
        index=index_entry,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        files={name: file_sha256(staging / name) for name in (*DATA_FILES, VECTORS) if (staging / name).exists()},
    )
    (staging / MANIFEST).write_text(manifest.to_json())
    _fsync_tree(staging)
    final = versions / stamp
    staging.rename(final)
    link = index_dir / f".current-{stamp}"
    link.symlink_to(Path("versions") / stamp)
    os.replace(link, index_dir / "current")
    _prune(versions, keep=final, milvus=milvus.connection if milvus else None)
    return final


def _flat_with_ids(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[artworks, views, dim] as [artworks x views, dim] rows, each with its artwork's row id."""
    return vectors.reshape(-1, vectors.shape[2]), np.repeat(np.arange(vectors.shape[0]), vectors.shape[1])


def _write_faiss(staging: Path, vectors: np.ndarray, plan: vector_index.IndexPlan, trained: faiss.Index | None) -> dict:
    """Build (or refill `trained`) and save the FAISS index; its manifest entry."""
    flat, ids = _flat_with_ids(vectors)
    if trained is None:
        index, report = vector_index.build_and_measure(flat, ids, plan)
    else:
        index, report = vector_index.refill_and_measure(trained, flat, ids, plan)
    vector_index.save_index(index, staging / VECTORS)
    return {"backend": vector_store.FAISS, "plan": asdict(plan), "report": report.to_dict()}


def _write_milvus(target: MilvusTarget, collection: str, vectors: np.ndarray, artworks: list[Artwork]) -> dict:
    """Write the collection and measure its recall against exact search; its manifest entry."""
    seconds = milvus_store.write_collection(target.connection, collection, vectors, artworks, target.index_type)
    flat, ids = _flat_with_ids(vectors)
    store = milvus_store.MilvusStore(target.connection, collection, vectors.shape[1])
    try:
        recall = vector_index.recall_against_exact(lambda queries, k: store.search(queries, k)[1], flat, ids)
    finally:
        store.close()
    report = vector_index.IndexReport(f"Milvus {target.index_type}", 0, len(flat), 4 * flat.size, round(seconds, 2), round(recall[0], 4),
                                      round(recall[1], 4), min(vector_index.RECALL_QUERIES, len(flat)))
    where = {"uri": target.connection.uri, "collection": collection, "index_type": target.index_type}
    return {"backend": vector_store.MILVUS, "milvus": where, "report": report.to_dict()}


def republish(current: Gallery, artworks: list[Artwork], vectors: np.ndarray, features: list[LocalFeatures]) -> Path:
    """Publish changed contents of `current` (after an add or a remove) with its model, views,
    source, calibration and backend: a FAISS index gets its trained structure (read again
    from the file: the loaded copy may live on a GPU), so nothing is encoded or trained
    again; a Milvus one gets a new collection in the same Milvus."""
    manifest = current.manifest
    carried = tuple(p for p in (current.directory / name for name in CARRIED_FILES) if p.exists())
    common = (current.directory.parent.parent, manifest.model, artworks, vectors, features, manifest.local_features,
              tuple(manifest.gallery_blurs), manifest.source)
    if isinstance(current.vectors, milvus_store.MilvusStore):
        return publish(*common, carried_files=carried,
                       milvus=MilvusTarget(current.vectors.connection, manifest.index["milvus"]["index_type"]))
    return publish(*common, manifest.index_plan, vector_index.read_index(current.directory / VECTORS), carried)


PACKED_FEATURES = ("offsets", "points", "descriptors", "colours")


def pack_features(features: list[LocalFeatures]) -> dict[str, np.ndarray]:
    """Many artworks' local features as four arrays (offsets[i]:offsets[i + 1] are row i's),
    the layout of the index files and of ingest checkpoints."""
    offsets = np.zeros(len(features) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(f) for f in features])
    empty = np.empty((0, DESCRIPTOR_BYTES), np.uint8)
    return {
        "offsets": offsets,
        "points": np.concatenate([f.points for f in features] or [np.empty((0, 2))]).astype(np.float32),
        "descriptors": np.concatenate([f.descriptors if f.descriptors is not None else empty for f in features] or [empty]),
        "colours": np.array([f.colour for f in features], np.float32).reshape(len(features), -1),
    }


def unpack_features(packed: Mapping[str, np.ndarray]) -> list[LocalFeatures]:
    offsets = packed["offsets"]
    return [
        LocalFeatures(packed["points"][start:end], packed["descriptors"][start:end] if end > start else None, packed["colours"][row])
        for row, (start, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True))
    ]


def _write_features(directory: Path, features: list[LocalFeatures]) -> None:
    packed = pack_features(features)
    np.save(directory / FEATURE_OFFSETS, packed["offsets"])
    np.save(directory / FEATURE_POINTS, packed["points"])
    np.save(directory / FEATURE_DESCRIPTORS, packed["descriptors"])
    np.save(directory / FEATURE_COLOURS, packed["colours"])
    owners = np.repeat(np.arange(len(features)), np.diff(packed["offsets"]))
    feature_votes.save(feature_votes.build(packed["descriptors"], owners), directory / VOTES)


def _drop_collection_of(version: Path, milvus: MilvusConnection | None) -> None:
    """Drop an old Milvus version's collection (through `milvus`, else the URI it recorded)."""
    try:
        entry = Manifest.from_json((version / MANIFEST).read_text()).index
    except (OSError, ValueError, KeyError, TypeError):
        return
    if entry.get("backend") == vector_store.MILVUS:
        recorded = entry["milvus"]
        _drop_collection(milvus or MilvusConnection(recorded["uri"]), recorded["collection"], f"pruned version {version.name}")


def _drop_collection(connection: MilvusConnection, name: str, whose: str) -> None:
    """A failure is logged, not raised: pruning is housekeeping after the new version is published."""
    try:
        milvus_store.drop_collection(connection, name)
    except Exception as error:  # noqa: BLE001
        log.warning("could not drop Milvus collection %s of %s: %s", name, whose, error)


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(versions: Path, keep: Path, milvus: MilvusConnection | None) -> None:
    """Remove old versions (and their Milvus collections) and abandoned partial ones, keeping
    the newest few."""
    finished = sorted((p for p in versions.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    for old in finished[:-VERSIONS_KEPT]:
        if old != keep:
            _drop_collection_of(old, milvus)
            shutil.rmtree(old, ignore_errors=True)
    for partial in versions.glob(".*.partial"):
        if partial != keep:
            if milvus is not None:  # a publish that failed or was killed after writing its collection
                stamp = partial.name.removeprefix(".").removesuffix(".partial")
                _drop_collection(milvus, milvus_store.collection_name(stamp), f"abandoned {partial.name}")
            shutil.rmtree(partial, ignore_errors=True)


class Gallery:
    """A loaded, verified, read-only gallery version."""

    def __init__(self, directory: Path, manifest: Manifest, vectors: vector_store.VectorStore, metadata: MetadataStore) -> None:
        self.directory = directory
        self.manifest = manifest
        self.vectors = vectors
        self.metadata = metadata
        # memory-mapped: start-up stays fast and only the pages of verified candidates are read
        self._offsets = np.load(directory / FEATURE_OFFSETS)
        self._points = np.load(directory / FEATURE_POINTS, mmap_mode="r")
        self._descriptors = np.load(directory / FEATURE_DESCRIPTORS, mmap_mode="r")
        self._colours = np.load(directory / FEATURE_COLOURS)
        self._votes = feature_votes.load(directory / VOTES)
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

    def similarities(self, views: np.ndarray, row_ids: list[int]) -> list[float]:
        """Each artwork's best cosine similarity over the query's and its own views (for
        candidates that came from elsewhere than the global search)."""
        if not row_ids:
            return []
        stored = np.asarray(self.embeddings[np.asarray(row_ids)], dtype=np.float32)  # [ids, views, dim]
        return np.einsum("qd,ivd->iqv", np.asarray(views, dtype=np.float32), stored).reshape(len(row_ids), -1).max(axis=1).tolist()

    def vote(self, descriptors: np.ndarray | None, n: int, lists_probed: int) -> list[tuple[Artwork, int, int]]:
        """The n artworks the photo's local descriptors voted for most: (artwork, votes, row id)."""
        voted = feature_votes.vote(self._votes, descriptors, n, lists_probed)
        found = self.metadata.by_row_ids(row_id for row_id, _ in voted)
        return [(found[row_id], votes, row_id) for row_id, votes in voted]

    def colours(self, row_ids: list[int]) -> np.ndarray:
        """float32 [n, 6] colour signatures of these artworks (colour.py)."""
        return self._colours[row_ids]

    def local_features(self, row_id: int) -> LocalFeatures:
        start, end = int(self._offsets[row_id]), int(self._offsets[row_id + 1])
        descriptors = np.asarray(self._descriptors[start:end]) if end > start else None
        return LocalFeatures(np.asarray(self._points[start:end]), descriptors, self._colours[row_id])

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
