"""What every gallery source provides, whichever collection it reads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.index.metadata import Artwork


class SourceError(WhatartError, ValueError):
    """The gallery source cannot be used; the message says what is wrong and where."""


@dataclass
class GallerySource:
    """A named collection of artworks whose `image_path` points at a readable file.

    Local sources hand over a list; remote ones (wikiart, nga) a lazy iterator that fetches
    each image into their cache as it is reached, so a large collection streams through
    ingestion in bounded memory. `failures` collects (artwork id, reason) for works a remote
    source had to leave out (e.g. an image that could not be fetched after retries)."""

    name: str
    artworks: Iterable[Artwork]
    total: int | None = None
    """How many artworks the source will yield, when it knows (for progress bars)."""
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.total is None and isinstance(self.artworks, list):
            self.total = len(self.artworks)


@dataclass(frozen=True)
class RemoteOptions:
    """How remote sources fetch: where images are cached (which is also what lets a rerun
    resume without fetching again), how many works at most, at what size, how politely."""

    cache_dir: Path
    limit: int | None = None
    image_size: int = 640
    """Longest side requested from an image server (IIIF `!size,size`)."""
    concurrency: int = 8
    requests_per_second: float = 10.0
    retries: int = 4
    timeout_s: float = 30.0
