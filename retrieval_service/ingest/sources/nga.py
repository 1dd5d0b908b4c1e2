"""The National Gallery of Art's open data as a gallery source (`nga:DIR_OR_URL`).

The CSVs of github.com/NationalGalleryOfArt/opendata (data/) are read from a folder, or
downloaded once into the cache from a base URL. The smaller tables (published images,
constituents and their links to objects) are indexed in dicts; objects.csv (~130k rows) is
streamed. Each object with a primary published image becomes an Artwork whose image is
fetched over IIIF as the iterator reaches it: a few workers, one global rate limit, retries
with backoff, atomic writes, and no refetch of an image already cached (a rerun resumes).
"""

from __future__ import annotations

import csv
import logging
import os
import random
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import httpx
from whatart.retrieval_service.index.metadata import Artwork
from whatart.retrieval_service.ingest.sources.base import GallerySource, RemoteOptions, SourceError

log = logging.getLogger(__name__)

COLUMNS = {
    "objects.csv": ("objectid", "title", "displaydate", "attribution", "classification", "visualbrowserstyle"),
    "published_images.csv": ("iiifurl", "viewtype", "sequence", "depictstmsobjectid"),
    "constituents.csv": ("constituentid", "preferreddisplayname"),
    "objects_constituents.csv": ("objectid", "constituentid", "displayorder", "roletype"),
}
"""The columns read from each file; upstream has more, which are ignored."""
BACKOFF_BASE_S = 1.0
"""The first retry waits about this long, doubling after each failure (tests shrink it)."""
BACKOFF_MAX_S = 60.0
WINDOW_PER_WORKER = 4
"""Downloads queued ahead of the consumer per worker: keeps workers busy, bounds memory."""

csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))  # objects.csv holds long provenance texts


def _number(text: str) -> int:
    """Sequence and display order compared as numbers ("9" before "10"); a blank sorts last."""
    try:
        return int(float(text))
    except ValueError:
        return 1 << 30


def _write_atomic(target: Path, chunks: Iterable[bytes]) -> None:
    """Write beside the target, then rename: a kill never leaves a partial file a rerun would trust."""
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _csv_folder(location: str, cache: Path, timeout_s: float) -> Path:
    """The folder holding the CSVs: `location` itself, or the cache once they are downloaded from it."""
    if not location.startswith(("http://", "https://")):
        return Path(location)
    folder = cache / "nga"
    folder.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        for name in (n for n in COLUMNS if not (folder / n).is_file()):
            url = f"{location.rstrip('/')}/{name}"
            try:
                with client.stream("GET", url) as response:
                    if not response.is_success:
                        raise SourceError(f"cannot download {name} from {url}: HTTP {response.status_code}")
                    _write_atomic(folder / name, response.iter_bytes())
            except httpx.HTTPError as error:
                raise SourceError(f"cannot download {name} from {url}: {type(error).__name__}: {error}") from None
    return folder


def _rows(folder: Path, name: str) -> Iterator[dict[str, str]]:
    """Stream one CSV's rows, after checking it exists and has the columns read from it."""
    path = folder / name
    if not path.is_file():
        raise SourceError(f"{path} does not exist: nga needs {', '.join(COLUMNS)} from the NGA open data (data/)")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, restval="")
        found = reader.fieldnames or []
        missing = [column for column in COLUMNS[name] if column not in found]
        if missing:
            raise SourceError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(found) or 'none'})")
        yield from reader


def _primary_images(folder: Path) -> dict[str, str]:
    """objectid -> IIIF base URL of its primary image (lowest sequence); alternates show other views."""
    best: dict[str, tuple[int, str]] = {}
    for row in _rows(folder, "published_images.csv"):
        key, url, sequence = row["depictstmsobjectid"].strip(), row["iiifurl"].strip().rstrip("/"), _number(row["sequence"])
        if row["viewtype"].strip().lower() == "primary" and url and (key not in best or sequence < best[key][0]):
            best[key] = (sequence, url)
    return {key: url for key, (_, url) in best.items()}


def _artists(folder: Path) -> dict[str, str]:
    """objectid -> its artists in display order, joined by "; " (owners and donors are not artists)."""
    names = {row["constituentid"].strip(): row["preferreddisplayname"].strip() for row in _rows(folder, "constituents.csv")}
    links: dict[str, list[tuple[int, str]]] = {}
    for row in _rows(folder, "objects_constituents.csv"):
        if row["roletype"].strip().lower() == "artist" and (name := names.get(row["constituentid"].strip())):
            links.setdefault(row["objectid"].strip(), []).append((_number(row["displayorder"]), name))
    return {key: "; ".join(dict.fromkeys(name for _, name in sorted(found))) for key, found in links.items()}


def _candidates(folder: Path, images: dict[str, str], artists: dict[str, str], image_dir: Path) -> Iterator[tuple[Artwork, str]]:
    """(artwork, IIIF base URL) for each object with a primary image, in objects.csv order."""
    for row in _rows(folder, "objects.csv"):
        key = row["objectid"].strip()
        if key.isdigit() and key in images:  # objectids are numbers; anything else must not become a path
            artwork = Artwork(id=f"nga-{key}", artist=artists.get(key) or row["attribution"].strip(), title=row["title"].strip(),
                              genre=row["classification"].strip(), style=row["visualbrowserstyle"].strip(),
                              date=row["displaydate"].strip(), image_path=str(image_dir / f"{key}.jpg"), source="nga")
            yield artwork, images[key]


def _backoff(attempt: int, retry_after: str | None) -> float:
    """Seconds before the next try: the server's Retry-After when it gives one in seconds, else
    exponential with jitter, so that workers failing together do not all retry together."""
    try:
        return max(0.0, min(float(retry_after or ""), BACKOFF_MAX_S))  # in this order a "nan" gives 0
    except ValueError:
        delay = min(BACKOFF_BASE_S * 2**attempt, BACKOFF_MAX_S)
        return delay + random.uniform(0, delay)


class _Fetcher:
    """Downloads IIIF images politely: request starts spaced 1/rps apart across all workers."""

    def __init__(self, options: RemoteOptions) -> None:
        self.size, self.retries = options.image_size, options.retries
        self.interval = 1 / options.requests_per_second if options.requests_per_second > 0 else 0.0
        self.next_start, self.lock = 0.0, threading.Lock()
        self.client = httpx.Client(timeout=options.timeout_s, follow_redirects=True,
                                   limits=httpx.Limits(max_connections=max(options.concurrency, 1)))

    def _wait_turn(self) -> None:
        """Reserve the next start time under the lock, sleep outside it (the museum's API is shared)."""
        with self.lock:
            now = time.monotonic()
            start = self.next_start = max(now, self.next_start)
            self.next_start += self.interval
        time.sleep(max(start - now, 0.0))

    def fetch(self, base_url: str, target: Path) -> str | None:
        """Fetch one image into `target`: None when it arrived, else why not (URL and last status or error)."""
        url, reason = f"{base_url}/full/!{self.size},{self.size}/0/default.jpg", ""
        for attempt in range(self.retries + 1):
            self._wait_turn()
            try:
                response = self.client.get(url)
            except httpx.HTTPError as error:
                if not isinstance(error, httpx.TransportError):  # e.g. too many redirects: retrying will not help
                    return f"{url}: {type(error).__name__}: {error}"
                reason, retry_after = f"{type(error).__name__}: {error}", None
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return self._save(url, response, target)
                reason, retry_after = f"HTTP {response.status_code}", response.headers.get("retry-after")
            if attempt < self.retries:
                time.sleep(_backoff(attempt, retry_after))
        return f"{url}: {reason} after {self.retries + 1} attempt(s)"

    @staticmethod
    def _save(url: str, response: httpx.Response, target: Path) -> str | None:
        """Keep only real images: an error page saved as .jpg would poison the cache for every rerun."""
        content_type = response.headers.get("content-type", "")
        if not response.is_success:
            return f"{url}: HTTP {response.status_code}"
        if not content_type.startswith("image/") or not response.content:
            return f"{url}: not an image (content-type {content_type or 'none'}, {len(response.content)} bytes)"
        _write_atomic(target, [response.content])
        return None


def _fetched(candidates: Iterator[tuple[Artwork, str]], options: RemoteOptions, failures: list[tuple[str, str]]) -> Iterator[Artwork]:
    """Yield artworks in order as their images arrive, with a bounded window of downloads ahead."""
    started, counts = time.monotonic(), {"fetched": 0, "cached": 0, "failed": 0}
    (options.cache_dir / "nga" / "images").mkdir(parents=True, exist_ok=True)
    fetcher, workers = _Fetcher(options), max(options.concurrency, 1)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nga-fetch")
    window: deque[tuple[Artwork, Future[str | None] | None]] = deque()  # None: already in the cache
    try:
        for artwork, url in candidates:
            target = Path(artwork.image_path)
            window.append((artwork, None if target.is_file() else executor.submit(fetcher.fetch, url, target)))
            while window and (len(window) >= workers * WINDOW_PER_WORKER or window[0][1] is None or window[0][1].done()):
                yield from _settle(*window.popleft(), failures, counts)
        while window:
            yield from _settle(*window.popleft(), failures, counts)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        fetcher.client.close()
        log.info("nga: %d image(s) fetched, %d already cached, %d failed in %.1f s",
                 counts["fetched"], counts["cached"], counts["failed"], time.monotonic() - started)


def _settle(artwork: Artwork, future: Future[str | None] | None, failures: list[tuple[str, str]],
            counts: dict[str, int]) -> Iterator[Artwork]:
    """The artwork once its image is in the cache; a failure is recorded instead, and the run goes on."""
    reason = future.result() if future is not None else None
    if reason is not None:
        counts["failed"] += 1
        failures.append((artwork.id, reason))
        log.warning("nga: left out %s: %s", artwork.id, reason)
        return
    counts["fetched" if future is not None else "cached"] += 1
    yield artwork


def nga_source(location: str, options: RemoteOptions) -> GallerySource:
    """The NGA's objects that have a primary image, from the open data CSVs in `location` (a folder,
    or an http(s) base URL); images are fetched lazily into `options.cache_dir / "nga" / "images"`."""
    if options.limit is not None and options.limit < 0:
        raise SourceError(f"limit must be 0 or more, not {options.limit}")
    started = time.monotonic()
    folder = _csv_folder(location, options.cache_dir, options.timeout_s)
    images, artists = _primary_images(folder), _artists(folder)
    objects = with_image = 0
    for row in _rows(folder, "objects.csv"):
        key = row["objectid"].strip()
        objects, with_image = objects + 1, with_image + (key.isdigit() and key in images)
    log.info("nga: %d object(s) with a primary image, %d without (left out); CSVs read in %.1f s",
             with_image, objects - with_image, time.monotonic() - started)
    failures: list[tuple[str, str]] = []
    candidates = islice(_candidates(folder, images, artists, options.cache_dir / "nga" / "images"), options.limit)
    total = with_image if options.limit is None else min(options.limit, with_image)
    return GallerySource("nga", _fetched(candidates, options, failures), total=total, failures=failures)
