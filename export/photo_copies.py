"""Photo-like training copies for the style and genre heads.

Heads trained on bare gallery images lose about 11 points of style top-1 on photos of
works they never saw (docs/accuracy.md: 70 % on the bare images, 59 % on `photo` queries): a photo
adds wall, frame, perspective, light and compression. Training also on photo-like copies
of the training artworks (the evaluation's `photo` distortion, under a seed of its own),
encoded through Triton under the views the service predicts from (the centre crops),
teaches the heads what photos look like.
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm
from whatart.export.head_training import ExtraVectors
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.evaluation.protocols import make_query
from whatart.retrieval_service.features.views import query_views
from whatart.retrieval_service.index.metadata import Artwork
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.access_key import triton_api_key
from whatart.retrieval_service.triton.encoder import TritonEncoder, resolve_model
from whatart.retrieval_service.triton.model_contract import ModelIdentity

COPY_SEED = 7919
"""Distinct from the evaluation's query seeds, so no training copy equals a test query."""


class IdentityMismatch(WhatartError):
    """Triton serves another encoder than the one whose index the heads train on."""


def _views(artwork: Artwork, row: int, copy: int, size: int, crops: tuple[float, ...]) -> np.ndarray:
    with Image.open(artwork.image_path) as image:
        data = make_query("photo", image, COPY_SEED + copy, row)
    with Image.open(io.BytesIO(data)) as photo:
        return query_views(photo.convert("RGB"), size, (), crops)


def photo_copy_vectors(copies: int, settings: Settings, model: str | None) -> ExtraVectors:
    """For `train_heads`: encodes `copies` photo-like copies of the artworks it is given."""

    def encode(artworks: dict[int, Artwork], identity: ModelIdentity) -> tuple[np.ndarray, np.ndarray]:
        return asyncio.run(encode_photo_copies(artworks, identity, copies, settings, model))

    return encode


async def encode_photo_copies(
    artworks: dict[int, Artwork], identity: ModelIdentity, copies: int, settings: Settings, model: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors [m, dim], row ids [m]): `copies` photo-like copies of each artwork
    (by row id), one vector per centre-crop view of the service's settings."""
    encoder = TritonEncoder.from_settings(settings, await resolve_model(settings.triton_url, model, triton_api_key(settings)))
    try:
        return await _encode(artworks, identity, copies, encoder, settings.query_crops, settings.ingest_concurrency)
    finally:
        await encoder.close()


async def _encode(
    artworks: dict[int, Artwork], identity: ModelIdentity, copies: int, encoder: TritonEncoder,
    crops: tuple[float, ...], concurrency: int,
) -> tuple[np.ndarray, np.ndarray]:
    served = await encoder.served_model()
    differences = served.identity.differences(identity)
    if differences:
        raise IdentityMismatch(
            f"Triton serves another encoder than the one the index was built with ({'; '.join(differences)}): "
            "serve that encoder while training, or rebuild the index with this one"
        )
    jobs = [(row, artwork, copy) for row, artwork in artworks.items() for copy in range(copies)]
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    progress = tqdm(total=len(jobs), unit="copy", desc="photo-like copies")

    async def one(row: int, artwork: Artwork, copy: int, pool: ThreadPoolExecutor) -> tuple[np.ndarray, int]:
        async with slots:
            views = await loop.run_in_executor(pool, _views, artwork, row, copy, served.input_size, crops)
            vectors = await encoder.encode(views)
        progress.update()
        return vectors, row

    with ThreadPoolExecutor() as pool:
        try:
            encoded = await asyncio.gather(*(one(row, artwork, copy, pool) for row, artwork, copy in jobs))
        finally:
            progress.close()
    vectors = np.concatenate([v for v, _ in encoded]).astype(np.float32)
    rows = np.concatenate([np.full(len(v), row) for v, row in encoded]).astype(np.int64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12), rows
