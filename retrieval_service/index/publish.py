"""Publishing a gallery version: build every file of a new version beside the current one,
then swap the ``current`` link in one rename, so a reader (or a crash) sees either the old
gallery or the new one, never a mix; old versions (and their Milvus collections) are pruned."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np
from whatart.retrieval_service.features.local_features import LocalFeatures
from whatart.retrieval_service.index import layout, milvus_store, recall, vector_index, vector_store
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.metadata import Artwork, write_metadata
from whatart.retrieval_service.index.milvus_store import MilvusConnection, MilvusTarget
from whatart.retrieval_service.triton.model_contract import ModelIdentity

log = logging.getLogger(__name__)


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
    np.save(staging / layout.EMBEDDINGS, vectors.astype(np.float16))
    for carried in carried_files:
        shutil.copyfile(carried, staging / carried.name)
    count = write_metadata(staging / layout.METADATA, artworks)
    _write_features(staging, features)
    manifest = layout.Manifest(
        format=layout.FORMAT_VERSION,
        model=identity,
        count=count,
        gallery_blurs=list(gallery_blurs),
        local_features=features_description,
        source=source,
        index=index_entry,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        files={name: layout.file_sha256(staging / name) for name in (*layout.DATA_FILES, layout.VECTORS) if (staging / name).exists()},
    )
    (staging / layout.MANIFEST).write_text(manifest.to_json())
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
        index, report = recall.build_and_measure(flat, ids, plan)
    else:
        index, report = recall.refill_and_measure(trained, flat, ids, plan)
    vector_index.save_index(index, staging / layout.VECTORS)
    return {"backend": vector_store.FAISS, "plan": asdict(plan), "report": report.to_dict()}


def _write_milvus(target: MilvusTarget, collection: str, vectors: np.ndarray, artworks: list[Artwork]) -> dict:
    """Write the collection and measure its recall against exact search; its manifest entry."""
    seconds = milvus_store.write_collection(target.connection, collection, vectors, artworks, target.index_type)
    flat, ids = _flat_with_ids(vectors)
    store = milvus_store.MilvusStore(target.connection, collection, vectors.shape[1])
    try:
        at_1, at_5 = recall.recall_against_exact(lambda queries, k: store.search(queries, k)[1], flat, ids)
    finally:
        store.close()
    report = recall.IndexReport(f"Milvus {target.index_type}", 0, len(flat), 4 * flat.size, round(seconds, 2), round(at_1, 4),
                                round(at_5, 4), min(recall.RECALL_QUERIES, len(flat)))
    where = {"uri": target.connection.uri, "collection": collection, "index_type": target.index_type}
    return {"backend": vector_store.MILVUS, "milvus": where, "report": report.to_dict()}


def republish(current: Gallery, artworks: list[Artwork], vectors: np.ndarray, features: list[LocalFeatures]) -> Path:
    """Publish changed contents of `current` (after an add or a remove) with its model, views,
    source, calibration and backend: a FAISS index gets its trained structure (read again
    from the file: the loaded copy may live on a GPU), so nothing is encoded or trained
    again; a Milvus one gets a new collection in the same Milvus."""
    manifest = current.manifest
    carried = tuple(p for p in (current.directory / name for name in layout.CARRIED_FILES) if p.exists())
    common = (current.directory.parent.parent, manifest.model, artworks, vectors, features, manifest.local_features,
              tuple(manifest.gallery_blurs), manifest.source)
    if isinstance(current.vectors, milvus_store.MilvusStore):
        return publish(*common, carried_files=carried,
                       milvus=MilvusTarget(current.vectors.connection, manifest.index["milvus"]["index_type"]))
    return publish(*common, manifest.index_plan, vector_index.read_index(current.directory / layout.VECTORS), carried)


def _write_features(directory: Path, features: list[LocalFeatures]) -> None:
    packed = layout.pack_features(features)
    np.save(directory / layout.FEATURE_OFFSETS, packed["offsets"])
    np.save(directory / layout.FEATURE_POINTS, packed["points"])
    np.save(directory / layout.FEATURE_DESCRIPTORS, packed["descriptors"])
    np.save(directory / layout.FEATURE_COLOURS, packed["colours"])


def _drop_collection_of(version: Path, milvus: MilvusConnection | None) -> None:
    """Drop an old Milvus version's collection (through `milvus`, else the URI it recorded)."""
    try:
        entry = layout.Manifest.from_json((version / layout.MANIFEST).read_text()).index
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
    for old in finished[:-layout.VERSIONS_KEPT]:
        if old != keep:
            _drop_collection_of(old, milvus)
            shutil.rmtree(old, ignore_errors=True)
    for partial in versions.glob(".*.partial"):
        if partial != keep:
            if milvus is not None:  # a publish that failed or was killed after writing its collection
                stamp = partial.name.removeprefix(".").removesuffix(".partial")
                _drop_collection(milvus, milvus_store.collection_name(stamp), f"abandoned {partial.name}")
            shutil.rmtree(partial, ignore_errors=True)
