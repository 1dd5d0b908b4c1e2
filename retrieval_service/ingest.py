"""`whatart ingest`: encode a gallery source through Triton and publish it as an index.

Decoding runs in a thread pool and many small requests are kept in flight, so Triton's
dynamic batcher always has a queue to form large batches from.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from whatart.retrieval_service import gallery
from whatart.retrieval_service.encoder import TritonEncoder
from whatart.retrieval_service.images import ImageError, decode_image
from whatart.retrieval_service.metadata import Artwork
from whatart.retrieval_service.model_contract import ModelIdentity
from whatart.retrieval_service.sources import GallerySource
from whatart.retrieval_service.verification import FeatureExtractor, LocalFeatures
from whatart.retrieval_service.views import gallery_views

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    source: str
    model: str
    count: int
    seconds: float
    version_dir: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(artwork id, reason) for images that could not be read."""

    @property
    def images_per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Chunk:
    """One batch of artworks on its way through decode, Triton and feature extraction."""

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


def current_gallery(
    index_dir: Path, identity: ModelIdentity, source: GallerySource, gallery_blurs: tuple[float, ...]
) -> gallery.Gallery | None:
    """The index at `index_dir` when ingesting `source` again would rebuild the same thing
    (same source name and size, model, gallery views and local features), else None."""
    try:
        found = gallery.Gallery.load(index_dir)
    except gallery.GalleryError:
        return None
    manifest = found.manifest
    if (manifest.model, manifest.source, manifest.count, tuple(manifest.gallery_blurs), manifest.local_features) == (
        identity, source.name, len(source.artworks), gallery_blurs, FeatureExtractor().description
    ):
        return found
    found.close()
    return None


async def ingest(
    source: GallerySource,
    index_dir: Path,
    encoder: TritonEncoder,
    batch_size: int,
    concurrency: int,
    max_pixels: int,
    gallery_blurs: tuple[float, ...],
    show_progress: bool = True,
) -> IngestReport:
    """Encode every artwork under each gallery view and publish the result."""
    started = time.perf_counter()
    served = await encoder.served_model()
    size = served.input_size
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    progress = tqdm(total=len(source.artworks), unit="img", desc=f"ingest {source.name}", disable=not show_progress)

    extractor = FeatureExtractor()

    def prepare_chunk(artworks: list[Artwork]) -> _Chunk:
        chunk = _Chunk()
        for artwork in artworks:
            try:
                views, features = _prepare(artwork, size, max_pixels, gallery_blurs, extractor)
            except ImageError as error:
                chunk.skipped.append((artwork.id, str(error)))
                continue
            chunk.artworks.append(artwork)
            chunk.pixels.extend(views)
            chunk.features.append(features)
        return chunk

    async def encode_chunk(artworks: list[Artwork], pool: ThreadPoolExecutor) -> _Chunk:
        async with slots:
            chunk = await loop.run_in_executor(pool, prepare_chunk, artworks)
            shape = (len(chunk.artworks), len(gallery_blurs), served.identity.dim)
            chunk.vectors = (await encoder.encode(np.stack(chunk.pixels))).reshape(shape) if chunk.pixels else np.empty(shape)
            chunk.pixels = []  # free them: only vectors are kept
        progress.update(len(artworks))
        return chunk

    batches = [source.artworks[i : i + batch_size] for i in range(0, len(source.artworks), batch_size)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        try:
            chunks = await asyncio.gather(*(encode_chunk(batch, pool) for batch in batches))
        finally:
            progress.close()
    artworks = [a for chunk in chunks for a in chunk.artworks]
    skipped = [s for chunk in chunks for s in chunk.skipped]
    if not artworks:
        raise ImageError(f"none of the {len(source.artworks)} images of {source.name} could be read")
    vectors = np.concatenate([chunk.vectors for chunk in chunks]).astype(np.float32)
    features = [f for chunk in chunks for f in chunk.features]
    version_dir = await asyncio.to_thread(
        gallery.publish, index_dir, served.identity, artworks, vectors, features, extractor.description, gallery_blurs,
        source.name,
    )
    report = IngestReport(source.name, served.identity.name, len(artworks), time.perf_counter() - started, version_dir, skipped)
    for artwork_id, reason in skipped:
        log.warning("skipped %s: %s", artwork_id, reason)
    log.info(
        "ingested %d artworks from %s with %s in %.1f s (%.1f img/s), %d skipped; published %s",
        report.count, source.name, report.model, report.seconds, report.images_per_second, len(skipped), version_dir,
    )
    return report
