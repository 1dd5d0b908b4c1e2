"""Image bytes -> ranked artworks: decode, encode through Triton, search, join metadata."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

from whatart.retrieval_service.encoder import ServedModel, TritonEncoder
from whatart.retrieval_service.gallery import Gallery, GalleryError
from whatart.retrieval_service.images import load_pixels
from whatart.retrieval_service.metadata import Artwork


def image_url(artwork_id: str) -> str:
    return f"/v1/artworks/{quote(artwork_id, safe='')}/image"


def match_json(artwork: Artwork, score: float) -> dict[str, object]:
    # float32 inner products of unit vectors can land a hair above 1.0
    return {**artwork.public(), "score": round(min(score, 1.0), 6), "image_url": image_url(artwork.id)}


def check_compatible(gallery: Gallery, served: ServedModel, index_dir: str) -> None:
    """Refuse to search an index with embeddings from a different model."""
    differences = gallery.manifest.model.differences(served.identity)
    if differences:
        raise GalleryError(
            f"the index at {index_dir} was built with another model than Triton serves "
            f"({'; '.join(differences)}): rebuild it with `whatart ingest SOURCE --index {index_dir}` "
            "or serve the model it was built with"
        )


@dataclass(frozen=True)
class Identification:
    matches: list[dict[str, object]]
    model: str
    took_ms: float
    timings_ms: dict[str, float]

    def to_json(self) -> dict[str, object]:
        return {"matches": self.matches, "model": self.model, "took_ms": self.took_ms, "timings_ms": self.timings_ms}


class Identifier:
    def __init__(self, gallery: Gallery, encoder: TritonEncoder, served: ServedModel, max_pixels: int) -> None:
        self.gallery = gallery
        self.encoder = encoder
        self.served = served
        self.max_pixels = max_pixels

    async def identify(self, data: bytes, k: int) -> Identification:
        started = time.perf_counter()
        pixels = await asyncio.to_thread(load_pixels, data, self.served.input_size, self.max_pixels)
        decoded = time.perf_counter()
        embedding = await self.encoder.encode(pixels[np.newaxis])
        encoded = time.perf_counter()
        (ranked,) = await asyncio.to_thread(self.gallery.search, embedding, k)
        searched = time.perf_counter()
        timings = {
            "decode": (decoded - started) * 1e3,
            "triton": (encoded - decoded) * 1e3,
            "search": (searched - encoded) * 1e3,
        }
        return Identification(
            matches=[match_json(artwork, score) for artwork, score in ranked],
            model=self.served.identity.name,
            took_ms=round((searched - started) * 1e3, 2),
            timings_ms={stage: round(ms, 2) for stage, ms in timings.items()},
        )
