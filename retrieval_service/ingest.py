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
from whatart.retrieval_service.images import ImageError, load_pixels
from whatart.retrieval_service.metadata import Artwork
from whatart.retrieval_service.sources import GallerySource

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


def _read_pixels(artwork: Artwork, size: int, max_pixels: int) -> np.ndarray:
    try:
        data = Path(artwork.image_path).read_bytes()
    except OSError as error:
        raise ImageError(f"cannot read {artwork.image_path}: {error.strerror}") from None
    return load_pixels(data, size, max_pixels)


async def ingest(
    source: GallerySource,
    index_dir: Path,
    encoder: TritonEncoder,
    batch_size: int,
    concurrency: int,
    max_pixels: int,
    show_progress: bool = True,
) -> IngestReport:
    started = time.perf_counter()
    served = await encoder.served_model()
    size = served.input_size
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    progress = tqdm(total=len(source.artworks), unit="img", desc=f"ingest {source.name}", disable=not show_progress)

    def decode_chunk(chunk: list[Artwork]) -> tuple[list[Artwork], list[np.ndarray], list[tuple[str, str]]]:
        kept: list[Artwork] = []
        pixels: list[np.ndarray] = []
        skipped: list[tuple[str, str]] = []
        for artwork in chunk:
            try:
                pixels.append(_read_pixels(artwork, size, max_pixels))
                kept.append(artwork)
            except ImageError as error:
                skipped.append((artwork.id, str(error)))
        return kept, pixels, skipped

    async def encode_chunk(
        chunk: list[Artwork], pool: ThreadPoolExecutor
    ) -> tuple[list[Artwork], np.ndarray, list[tuple[str, str]]]:
        async with slots:
            kept, pixels, skipped = await loop.run_in_executor(pool, decode_chunk, chunk)
            vectors = await encoder.encode(np.stack(pixels)) if pixels else np.empty((0, served.identity.dim), np.float32)
        progress.update(len(chunk))
        return kept, vectors, skipped

    chunks = [source.artworks[i : i + batch_size] for i in range(0, len(source.artworks), batch_size)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        try:
            results = await asyncio.gather(*(encode_chunk(chunk, pool) for chunk in chunks))
        finally:
            progress.close()
    artworks = [a for kept, _, _ in results for a in kept]
    skipped = [s for _, _, chunk_skipped in results for s in chunk_skipped]
    if not artworks:
        raise ImageError(f"none of the {len(source.artworks)} images of {source.name} could be read")
    vectors = np.concatenate([v for _, v, _ in results])
    version_dir = await asyncio.to_thread(gallery.publish, index_dir, served.identity, artworks, vectors, source.name)
    report = IngestReport(source.name, served.identity.name, len(artworks), time.perf_counter() - started, version_dir, skipped)
    for artwork_id, reason in skipped:
        log.warning("skipped %s: %s", artwork_id, reason)
    log.info(
        "ingested %d artworks from %s with %s in %.1f s (%.1f img/s), %d skipped; published %s",
        report.count, source.name, report.model, report.seconds, report.images_per_second, len(skipped), version_dir,
    )
    return report
