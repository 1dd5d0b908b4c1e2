"""Serve the index version that `current` points at, without a restart.

`whatart ingest` publishes a new version by swapping the `current` symlink (index/publish.py).
The service looks at the link at most every `reload_check_s` seconds; when it points
elsewhere, the new version is loaded and verified off the event loop and swapped in for the
next request. A version that fails verification is logged and the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from whatart.retrieval_service import metrics
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.identify.identifier import Identifier, check_compatible
from whatart.retrieval_service.index.gallery import Gallery

log = logging.getLogger(__name__)


class GalleryReloader:
    def __init__(self, identifier: Identifier, index_dir: Path, check_every_s: float) -> None:
        self.identifier = identifier
        self.index_dir = index_dir
        self.check_every_s = check_every_s
        self._checked_at = time.monotonic()
        self._refused: Path | None = None
        self._lock = asyncio.Lock()

    async def current(self) -> Identifier:
        """The identifier over the newest valid version (checked at most every check_every_s)."""
        if time.monotonic() - self._checked_at >= self.check_every_s and not self._lock.locked():
            async with self._lock:
                self._checked_at = time.monotonic()
                target = (self.index_dir / "current").resolve()
                if target not in (self.identifier.gallery.directory, self._refused):
                    await asyncio.to_thread(self._load, target)
        return self.identifier

    def _load(self, target: Path) -> None:
        started = time.perf_counter()
        old = self.identifier
        try:
            gallery = Gallery.load(self.index_dir, old.settings.milvus_connection())
            check_compatible(gallery, old.served, str(self.index_dir))
        except WhatartError as error:
            self._refused = target
            log.error("not switching to %s, still serving %s: %s", target, old.gallery.directory, error)
            return
        # The old gallery is not closed here: requests may still be using it. Its SQLite
        # connection and memory maps are released when the last of them lets go of it.
        self.identifier = Identifier(gallery, old.encoder, old.served, old.settings)
        metrics.serving(len(gallery), len(gallery.vectors))
        log.info("now serving %s (%d artworks, was %d), loaded in %.2f s",
                 gallery.directory, len(gallery), len(old.gallery), time.perf_counter() - started)
