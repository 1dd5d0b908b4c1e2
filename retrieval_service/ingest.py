"""`whatart ingest`: encode a gallery source through Triton and publish it as an index.

The source is consumed as a stream, a checkpoint's worth of artworks at a time: each
checkpoint is decoded in a thread pool, encoded with many small requests in flight (so
Triton's dynamic batcher always has a queue to form large batches from) and written to the
work folder as one file, atomically. A killed run (even `kill -9`) loses at most the
checkpoints in flight: the rerun reads the finished ones, skips their artworks and goes on,
so no artwork is lost or encoded twice. The index is published (atomically) at the end and
the work folder removed.

`add=True` (`whatart ingest --add`) encodes only the works the current index lacks and
publishes current + new into the current index's trained structure. Works whose sharp
embedding is nearly identical to another's are reported as likely duplicates, not merged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from whatart.retrieval_service import gallery, milvus_store
from whatart.retrieval_service.duplicates import Duplicate, find_duplicates
from whatart.retrieval_service.encoder import ServedModel, TritonEncoder
from whatart.retrieval_service.images import ImageError, decode_image
from whatart.retrieval_service.metadata import Artwork
from whatart.retrieval_service.model_contract import ModelIdentity
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.sources import GallerySource
from whatart.retrieval_service.verification import FeatureExtractor, LocalFeatures
from whatart.retrieval_service.views import gallery_views

log = logging.getLogger(__name__)

WORK_FOLDER = "ingest-work"
CHUNKS_IN_FLIGHT = 2
"""Checkpoints encoded at once: the next one's requests fill Triton's queue while the
previous one's last requests finish, and memory stays bounded."""


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


@dataclass
class _Chunk:
    """One checkpoint's artworks on their way through decode, Triton and feature extraction."""

    artworks: list[Artwork] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)
    features: list[LocalFeatures] = field(default_factory=list)
    vectors: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _prepare(
    artwork: Artwork, size: int, max_pixels: int, blurs: tuple[float, ...], extractor: FeatureExtractor
) -> tuple[list[np.ndarray], LocalFeatures]:
    """The artwork's model inputs (one per gallery view) and its local features."""
    try:
        data = Path(artwork.image_path).read_bytes()
    except OSError as error:
        raise ImageError(f"cannot read {artwork.image_path}: {error.strerror}") from None
    image = decode_image(data, max_pixels, draft_size=extractor.max_side)
    return gallery_views(image, size, blurs), extractor.extract(image)


def current_gallery(index_dir: Path, identity: ModelIdentity, source: GallerySource, settings: Settings) -> gallery.Gallery | None:
    """The index at `index_dir` when ingesting `source` again would rebuild the same thing
    (same source name and size, model, gallery views, local features and backend), else None."""
    try:
        found = gallery.Gallery.load(index_dir, settings.milvus_connection())
    except (gallery.GalleryError, milvus_store.MilvusCollectionMissing):  # none, broken, or its collection lost: rebuild
        return None
    manifest = found.manifest
    if (manifest.model, manifest.source, manifest.count, tuple(manifest.gallery_blurs), manifest.local_features, manifest.backend) == (
        identity, source.name, source.total, settings.gallery_blurs, FeatureExtractor().description, settings.index_backend
    ):
        return found
    found.close()
    return None


class Checkpoints:
    """The work folder of one ingest: `chunk-<n>.npz` files, each complete or absent."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for partial in directory.glob("*.tmp.npz"):
            partial.unlink()

    @classmethod
    def for_run(cls, index_dir: Path, identity: ModelIdentity, source: GallerySource, blurs: tuple[float, ...], add: bool) -> Checkpoints:
        """A run's folder is keyed by what determines its contents, so a rerun with other
        settings does not mix its artworks with stale ones."""
        key = json.dumps([asdict(identity), source.name, list(blurs), FeatureExtractor().description, add], sort_keys=True)
        return cls(index_dir / WORK_FOLDER / hashlib.sha256(key.encode()).hexdigest()[:16])

    def paths(self) -> list[Path]:
        return sorted(self.directory.glob("chunk-*[0-9].npz"))

    def write(self, number: int, chunk: _Chunk) -> None:
        target = self.directory / f"chunk-{number:08d}.npz"
        temporary = self.directory / f"chunk-{number:08d}.tmp.npz"
        with temporary.open("wb") as handle:
            np.savez(
                handle,
                vectors=chunk.vectors,
                artworks=np.array(json.dumps([asdict(a) for a in chunk.artworks])),
                skipped=np.array(json.dumps(chunk.skipped)),
                **gallery.pack_features(chunk.features),
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)

    def read(self) -> Iterator[_Chunk]:
        for path in self.paths():
            with np.load(path) as data:
                yield _Chunk(
                    artworks=[Artwork(**a) for a in json.loads(str(data["artworks"]))],
                    # each NpzFile lookup reads the array again: read every array once
                    features=gallery.unpack_features({name: data[name] for name in gallery.PACKED_FEATURES}),
                    vectors=data["vectors"],
                    skipped=[tuple(s) for s in json.loads(str(data["skipped"]))],
                )

    def done_ids(self) -> set[str]:
        """Ids of the checkpointed works, read without loading their vectors and features
        (an NpzFile reads only the arrays asked for)."""
        done: set[str] = set()
        for path in self.paths():
            with np.load(path) as data:
                done.update(a["id"] for a in json.loads(str(data["artworks"])))
                done.update(s[0] for s in json.loads(str(data["skipped"])))
        return done

    def next_number(self) -> int:
        paths = self.paths()
        return int(paths[-1].stem.split("-")[1]) + 1 if paths else 0

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _batches(artworks: Iterable[Artwork], size: int) -> Iterator[list[Artwork]]:
    iterator = iter(artworks)
    while batch := list(islice(iterator, size)):
        yield batch


class _Encoder:
    """Decode + local features in threads, embeddings through Triton, for one checkpoint."""

    def __init__(self, encoder: TritonEncoder, served: ServedModel, settings: Settings, pool: ThreadPoolExecutor) -> None:
        self.encoder, self.served, self.settings, self.pool = encoder, served, settings, pool
        self.extractor = FeatureExtractor()
        self.slots = asyncio.Semaphore(settings.ingest_concurrency)

    def _prepare_batch(self, artworks: list[Artwork]) -> _Chunk:
        chunk = _Chunk()
        for artwork in artworks:
            try:
                views, features = _prepare(artwork, self.served.input_size, self.settings.max_image_pixels,
                                           self.settings.gallery_blurs, self.extractor)
            except ImageError as error:
                chunk.skipped.append((artwork.id, str(error)))
                continue
            chunk.artworks.append(artwork)
            chunk.pixels.extend(views)
            chunk.features.append(features)
        return chunk

    async def _encode_batch(self, artworks: list[Artwork]) -> _Chunk:
        async with self.slots:
            chunk = await asyncio.get_running_loop().run_in_executor(self.pool, self._prepare_batch, artworks)
            shape = (len(chunk.artworks), len(self.settings.gallery_blurs), self.served.identity.dim)
            encoded = await self.encoder.encode(np.stack(chunk.pixels)) if chunk.pixels else np.empty(shape)
            chunk.vectors, chunk.pixels = encoded.reshape(shape).astype(np.float32), []
        return chunk

    async def encode(self, artworks: list[Artwork]) -> _Chunk:
        parts = await asyncio.gather(*(self._encode_batch(b) for b in _batches(artworks, self.settings.ingest_batch_size)))
        return _Chunk(
            artworks=[a for p in parts for a in p.artworks],
            features=[f for p in parts for f in p.features],
            vectors=np.concatenate([p.vectors for p in parts]),
            skipped=[s for p in parts for s in p.skipped],
        )


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

        encoded = await _encode_pending(pending(), source, checkpoints, encoder, served, settings, len(done) + len(in_gallery),
                                        show_progress)
        new, vectors, features, skipped = _collect(checkpoints, listed, in_gallery, (len(settings.gallery_blurs), served.identity.dim))
        skipped += source.failures
        if current is not None:
            if not new:
                raise ImageError(f"{source.name} has no artwork that the gallery at {index_dir} lacks (nothing was added)")
            old_artworks, old_vectors, old_features = current.contents()
            duplicates = find_duplicates(old_vectors[:, 0], vectors[:, 0], [a.id for a in old_artworks], [a.id for a in new],
                                         settings.duplicate_similarity)
            version_dir = await asyncio.to_thread(gallery.republish, current, old_artworks + new,
                                                  np.concatenate([old_vectors, vectors]), old_features + features)
            count = len(old_artworks) + len(new)
        else:
            if not new:
                raise ImageError(f"none of the images of {source.name} could be read")
            duplicates = find_duplicates(np.empty((0, vectors.shape[2]), np.float32), vectors[:, 0], [], [a.id for a in new],
                                         settings.duplicate_similarity)
            plan = settings.index_plan(len(new) * len(settings.gallery_blurs), served.identity.dim)
            version_dir = await asyncio.to_thread(
                gallery.publish, index_dir, served.identity, new, vectors, features, FeatureExtractor().description,
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


def _current_for_add(index_dir: Path, served: ServedModel, settings: Settings) -> gallery.Gallery:
    """The gallery to add to, refused when its model or views differ from this run's."""
    current = gallery.Gallery.load(index_dir, settings.milvus_connection())
    manifest = current.manifest
    if manifest.model != served.identity or tuple(manifest.gallery_blurs) != settings.gallery_blurs:
        current.close()
        raise gallery.GalleryError(
            f"cannot add to {index_dir}: it was built with {manifest.model.name} and views {manifest.gallery_blurs}, "
            f"this run encodes with {served.identity.name} and views {list(settings.gallery_blurs)}; ingest without --add to rebuild"
        )
    return current


async def _encode_pending(
    pending: Iterable[Artwork], source: GallerySource, checkpoints: Checkpoints, encoder: TritonEncoder, served: ServedModel,
    settings: Settings, already: int, show_progress: bool,
) -> int:
    """Encode `pending` checkpoint by checkpoint (a few in flight); the number encoded."""
    progress = tqdm(total=source.total, initial=min(already, source.total or already), unit="img", desc=f"ingest {source.name}",
                    disable=not show_progress, smoothing=0.1)
    number, encoded = checkpoints.next_number(), 0
    in_flight: set[asyncio.Task] = set()

    async def run_one(chunk_number: int, artworks: list[Artwork]) -> int:
        chunk = await work.encode(artworks)
        await asyncio.to_thread(checkpoints.write, chunk_number, chunk)
        progress.update(len(artworks))
        return len(chunk.artworks)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        work = _Encoder(encoder, served, settings, pool)
        try:
            batches = _batches(pending, settings.ingest_checkpoint_every)
            # the source is read in a thread: a remote one blocks while it fetches images
            while (artworks := await asyncio.to_thread(next, batches, None)) is not None:
                if len(in_flight) >= CHUNKS_IN_FLIGHT:
                    finished, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    encoded += sum(task.result() for task in finished)
                in_flight.add(asyncio.create_task(run_one(number, artworks)))
                number += 1
            encoded += sum(await asyncio.gather(*in_flight))
        finally:
            for task in in_flight:
                task.cancel()
            progress.close()
    return encoded


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
