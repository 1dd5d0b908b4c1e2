"""`whatart ingest`: encode a gallery source through Triton and publish it as an index.

The source is consumed as a stream, a checkpoint's worth of artworks at a time
(encoding.py), each finished chunk checkpointed (checkpoints.py): a killed run's rerun skips
the finished artworks and goes on, so no artwork is lost or encoded twice. The index is
published (atomically) at the end and the work folder removed.

`add=True` (`whatart ingest --add`) encodes only the works the current index lacks and
publishes current + new into the current index's trained structure. Works whose sharp
embedding is nearly identical to another's are reported as likely duplicates, not merged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from whatart.retrieval_service.features.local_features import FeatureExtractor, LocalFeatures
from whatart.retrieval_service.images import ImageError
from whatart.retrieval_service.index import milvus_store
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.layout import GalleryError
from whatart.retrieval_service.index.metadata import Artwork
from whatart.retrieval_service.index.publish import publish, republish
from whatart.retrieval_service.ingest.checkpoints import Checkpoints
from whatart.retrieval_service.ingest.duplicates import Duplicate, find_duplicates
from whatart.retrieval_service.ingest.encoding import encode_pending
from whatart.retrieval_service.ingest.sources import GallerySource
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.encoder import ServedModel, TritonEncoder
from whatart.retrieval_service.triton.model_contract import ModelIdentity

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    source: str
    model: str
    count: int
    """Artworks in the published gallery."""
    encoded: int
    """Artworks encoded by this run (the rest came from checkpoints or, with --add, the current index)."""
    seconds: float
    version_dir: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(artwork id, reason) for images that could not be read or fetched."""
    duplicates: list[Duplicate] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


def current_gallery(index_dir: Path, identity: ModelIdentity, source: GallerySource, settings: Settings) -> Gallery | None:
    """The index at `index_dir` when ingesting `source` again would rebuild the same thing
    (same source name and size, model, gallery views, local features and backend), else None."""
    try:
        found = Gallery.load(index_dir, settings.milvus_connection())
    except (GalleryError, milvus_store.MilvusCollectionMissing):  # none, broken, or its collection lost: rebuild
        return None
    manifest = found.manifest
    if (manifest.model, manifest.source, manifest.count, tuple(manifest.gallery_blurs), manifest.local_features, manifest.backend) == (
        identity, source.name, source.total, settings.gallery_blurs, FeatureExtractor.for_gallery().description, settings.index_backend
    ):
        return found
    found.close()
    return None


async def ingest(
    source: GallerySource, index_dir: Path, encoder: TritonEncoder, settings: Settings, add: bool = False, show_progress: bool = True
) -> IngestReport:
    """Encode the source's artworks (only the new ones with `add`), checkpointing as it
    goes, and publish the gallery."""
    started = time.perf_counter()
    served = await encoder.served_model()
    current = _current_for_add(index_dir, served, settings) if add else None
    try:
        in_gallery = set() if current is None else {a.id for a in current.metadata.in_row_order()}
        checkpoints = Checkpoints.for_run(index_dir, served.identity, source, settings.gallery_blurs, add)
        done = checkpoints.done_ids()
        if done:
            log.info("resuming: %d artworks already encoded in %s", len(done), checkpoints.directory)
        listed: set[str] = set()

        def pending() -> Iterator[Artwork]:
            for artwork in source.artworks:
                listed.add(artwork.id)
                if artwork.id not in done and artwork.id not in in_gallery:
                    yield artwork

        encoded = await encode_pending(pending(), source, checkpoints, encoder, served, settings, len(done) + len(in_gallery),
                                        show_progress)
        new, vectors, features, skipped = _collect(checkpoints, listed, in_gallery, (len(settings.gallery_blurs), served.identity.dim))
        skipped += source.failures
        if current is not None:
            if not new:
                raise ImageError(f"{source.name} has no artwork that the gallery at {index_dir} lacks (nothing was added)")
            old_artworks, old_vectors, old_features = current.contents()
            duplicates = find_duplicates(old_vectors[:, 0], vectors[:, 0], [a.id for a in old_artworks], [a.id for a in new],
                                         settings.duplicate_similarity)
            version_dir = await asyncio.to_thread(republish, current, old_artworks + new,
                                                  np.concatenate([old_vectors, vectors]), old_features + features)
            count = len(old_artworks) + len(new)
        else:
            if not new:
                raise ImageError(f"none of the images of {source.name} could be read")
            duplicates = find_duplicates(np.empty((0, vectors.shape[2]), np.float32), vectors[:, 0], [], [a.id for a in new],
                                         settings.duplicate_similarity)
            plan = settings.index_plan(len(new) * len(settings.gallery_blurs), served.identity.dim)
            version_dir = await asyncio.to_thread(
                publish, index_dir, served.identity, new, vectors, features, FeatureExtractor.for_gallery().description,
                settings.gallery_blurs, source.name, plan, milvus=settings.milvus_target(),
            )
            count = len(new)
    finally:
        if current is not None:
            current.close()
    checkpoints.remove()
    report = IngestReport(source.name, served.identity.name, count, encoded, time.perf_counter() - started, version_dir,
                          skipped, duplicates)
    _log_report(report)
    return report


def _collect(
    checkpoints: Checkpoints, listed: set[str], in_gallery: set[str], vector_shape: tuple[int, int]
) -> tuple[list[Artwork], np.ndarray, list[LocalFeatures], list[tuple[str, str]]]:
    """Artworks, vectors, features and skipped images of every checkpoint. Works the source
    no longer lists are dropped, as are works a published --add already holds (a rerun after
    a kill between publishing and clearing the checkpoints)."""
    chunks = list(checkpoints.read())
    artworks = [a for c in chunks for a in c.artworks]
    fresh = [i for i, a in enumerate(artworks) if a.id in listed and a.id not in in_gallery]
    vectors = np.concatenate([c.vectors for c in chunks])[fresh] if chunks else np.empty((0, *vector_shape), np.float32)
    features = [f for c in chunks for f in c.features]
    skipped = [s for c in chunks for s in c.skipped if s[0] in listed]
    return [artworks[i] for i in fresh], vectors, [features[i] for i in fresh], skipped


def _current_for_add(index_dir: Path, served: ServedModel, settings: Settings) -> Gallery:
    """The gallery to add to, refused when its model or views differ from this run's."""
    current = Gallery.load(index_dir, settings.milvus_connection())
    manifest = current.manifest
    if manifest.model != served.identity or tuple(manifest.gallery_blurs) != settings.gallery_blurs:
        current.close()
        raise GalleryError(
            f"cannot add to {index_dir}: it was built with {manifest.model.name} and views {manifest.gallery_blurs}, "
            f"this run encodes with {served.identity.name} and views {list(settings.gallery_blurs)}; ingest without --add to rebuild"
        )
    return current


def _log_report(report: IngestReport) -> None:
    for artwork_id, reason in report.skipped:
        log.warning("skipped %s: %s", artwork_id, reason)
    for duplicate in report.duplicates:
        log.warning("likely duplicate: %s looks like %s (similarity %.3f); both kept", duplicate.new_id, duplicate.existing_id,
                    duplicate.similarity)
    log.info(
        "published %d artworks from %s with %s in %.1f s (%d encoded, %.1f img/s), %d skipped, %d likely duplicates: %s",
        report.count, report.source, report.model, report.seconds, report.encoded, report.images_per_second,
        len(report.skipped), len(report.duplicates), report.version_dir,
    )
