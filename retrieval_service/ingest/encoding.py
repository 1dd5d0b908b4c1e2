"""Encoding an ingest's artworks: each chunk is decoded (with its local features) in a thread
pool and embedded with many small requests in flight, so Triton's dynamic batcher always has a
queue to form large batches from; a few chunks are in flight, each checkpointed when done."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm
from whatart.retrieval_service.features.local_features import FeatureExtractor, LocalFeatures
from whatart.retrieval_service.features.views import gallery_views
from whatart.retrieval_service.images import ImageError, decode_image
from whatart.retrieval_service.index.metadata import Artwork
from whatart.retrieval_service.ingest.checkpoints import Checkpoints, Chunk
from whatart.retrieval_service.ingest.sources import GallerySource
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.encoder import ServedModel, TritonEncoder

CHUNKS_IN_FLIGHT = 2
"""Checkpoints encoded at once: the next one's requests fill Triton's queue while the
previous one's last requests finish, and memory stays bounded."""


def _prepare(artwork: Artwork, size: int, settings: Settings, extractor: FeatureExtractor) -> tuple[list[np.ndarray], LocalFeatures]:
    """The artwork's model inputs (one per gallery view) and its local features."""
    try:
        data = Path(artwork.image_path).read_bytes()
    except OSError as error:
        raise ImageError(f"cannot read {artwork.image_path}: {error.strerror}") from None
    image = decode_image(data, settings.max_image_pixels, extractor.max_side, settings.max_image_aspect_ratio)
    return gallery_views(image, size, settings.gallery_blurs), extractor.extract(image)


def _batches(artworks: Iterable[Artwork], size: int) -> Iterator[list[Artwork]]:
    iterator = iter(artworks)
    while batch := list(islice(iterator, size)):
        yield batch


class ChunkEncoder:
    """Decode + local features in threads, embeddings through Triton, for one checkpoint."""

    def __init__(self, encoder: TritonEncoder, served: ServedModel, settings: Settings, pool: ThreadPoolExecutor) -> None:
        self.encoder, self.served, self.settings, self.pool = encoder, served, settings, pool
        self.extractor = FeatureExtractor.for_gallery()
        self.slots = asyncio.Semaphore(settings.ingest_concurrency)

    def _prepare_batch(self, artworks: list[Artwork]) -> Chunk:
        chunk = Chunk()
        for artwork in artworks:
            try:
                views, features = _prepare(artwork, self.served.input_size, self.settings, self.extractor)
            except ImageError as error:
                chunk.skipped.append((artwork.id, str(error)))
                continue
            chunk.artworks.append(artwork)
            chunk.pixels.extend(views)
            chunk.features.append(features)
        return chunk

    async def _encode_batch(self, artworks: list[Artwork]) -> Chunk:
        async with self.slots:
            chunk = await asyncio.get_running_loop().run_in_executor(self.pool, self._prepare_batch, artworks)
            shape = (len(chunk.artworks), len(self.settings.gallery_blurs), self.served.identity.dim)
            encoded = await self.encoder.encode(np.stack(chunk.pixels)) if chunk.pixels else np.empty(shape)
            chunk.vectors, chunk.pixels = encoded.reshape(shape).astype(np.float32), []
        return chunk

    async def encode(self, artworks: list[Artwork]) -> Chunk:
        parts = await asyncio.gather(*(self._encode_batch(b) for b in _batches(artworks, self.settings.ingest_batch_size)))
        return Chunk(
            artworks=[a for p in parts for a in p.artworks],
            features=[f for p in parts for f in p.features],
            vectors=np.concatenate([p.vectors for p in parts]),
            skipped=[s for p in parts for s in p.skipped],
        )


async def encode_pending(
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
        work = ChunkEncoder(encoder, served, settings, pool)
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
