"""The wikiart source on a small dataset in the upstream (huggan/wikiart) format, written as
parquet by `datasets` itself and read back over a real loopback HTTP server and from disk."""

from __future__ import annotations

import functools
import io
import os
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from whatart.retrieval_service.ingest.sources import RemoteOptions, SourceError, open_source
from whatart.retrieval_service.ingest.sources.wikiart import cache_folder

datasets = pytest.importorskip("datasets")
pq = pytest.importorskip("pyarrow.parquet")

ARTISTS = ["Unknown Artist", "claude-monet", "vincent-van-gogh", "berthe-morisot"]
GENRES = ["landscape", "portrait", "Unknown Genre"]
STYLES = ["Impressionism", "Post_Impressionism"]
ROWS = 12


def _picture(rng: np.random.Generator) -> Image.Image:
    """A 64x48 random-colour picture with a random rectangle on it."""
    pixels = np.empty((48, 64, 3), dtype=np.uint8)
    pixels[:] = rng.integers(0, 256, 3)
    top, left = rng.integers(0, 24), rng.integers(0, 32)
    pixels[top : top + 20, left : left + 28] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _expected(index: int) -> dict[str, str]:
    """The metadata row `index` of the gallery fixture must come out with."""
    names = (ARTISTS[index % len(ARTISTS)], GENRES[index % len(GENRES)], STYLES[index % len(STYLES)])
    return {field: "" if name.startswith("Unknown ") else name for field, name in zip(("artist", "genre", "style"), names, strict=True)}


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.parquet in huggan/wikiart's format: even rows JPEG bytes (as upstream), odd rows PNG."""
    folder = tmp_path_factory.mktemp("wikiart-data")
    rng = np.random.default_rng(7)
    pictures = [_picture(rng) for _ in range(ROWS)]
    features = datasets.Features({
        "image": datasets.Image(),
        "artist": datasets.ClassLabel(names=ARTISTS),
        "genre": datasets.ClassLabel(names=GENRES),
        "style": datasets.ClassLabel(names=STYLES),
    })
    table = {
        "image": [{"bytes": _jpeg(p), "path": None} if i % 2 == 0 else p for i, p in enumerate(pictures)],
        "artist": [i % len(ARTISTS) for i in range(ROWS)],
        "genre": [i % len(GENRES) for i in range(ROWS)],
        "style": [i % len(STYLES) for i in range(ROWS)],
    }
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(folder / "train.parquet"))
    return folder / "train.parquet"


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus `Range: bytes=...`, as every real file host (the hub, S3,
    nginx) supports: pyarrow reads a parquet's footer first, and fsspec's HTTP files refuse a
    server that answers a range request with the whole file."""

    def send_head(self):  # type: ignore[override]
        found = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if not found or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first, last = found.groups()
        start = int(first) if first else max(0, size - int(last))
        end = min(int(last), size - 1) if first and last else size - 1
        if start >= size:
            self.send_error(416)
            return None
        data = path.read_bytes()[start : end + 1]
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return io.BytesIO(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(gallery: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT serving the gallery's folder, stopped when the module is done."""
    handler = functools.partial(RangeRequestHandler, directory=str(gallery.parent))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_streams_a_parquet_over_http_with_label_names(server: str, tmp_path: Path) -> None:
    spec = f"wikiart:{server}/train.parquet"
    source = open_source(spec, remote=RemoteOptions(cache_dir=tmp_path / "cache", limit=5))
    assert source.name == spec and source.total == 5
    artworks = list(source.artworks)
    assert [a.id for a in artworks] == [f"wikiart-{i}" for i in range(5)]
    for index, artwork in enumerate(artworks):
        assert {"artist": artwork.artist, "genre": artwork.genre, "style": artwork.style} == _expected(index)
        assert artwork.title == "" and artwork.source == spec
        assert Path(artwork.image_path) == cache_folder(tmp_path / "cache", spec) / f"wikiart-{index}.jpg"
        with Image.open(artwork.image_path) as image:
            assert image.format == "JPEG" and image.size == (64, 48)
    assert artworks[1].artist == "claude-monet" and artworks[1].style == "Post_Impressionism"
    assert source.failures == []


def test_unknown_labels_become_empty(gallery: Path, tmp_path: Path) -> None:
    first = next(iter(open_source(f"wikiart:{gallery}", remote=RemoteOptions(cache_dir=tmp_path, limit=3)).artworks))
    assert (first.artist, first.genre, first.style) == ("", "landscape", "Impressionism")


def test_lazy_then_resumes_from_the_cache(gallery: Path, tmp_path: Path) -> None:
    options = RemoteOptions(cache_dir=tmp_path / "cache")
    cache = cache_folder(tmp_path / "cache", f"wikiart:{gallery}")
    source = open_source(f"wikiart:{gallery}", remote=options)
    assert source.total in (None, ROWS)  # a parquet file's row count is not in the streaming info
    assert not cache.exists() or not any(cache.iterdir())
    first = list(source.artworks)
    assert len(first) == ROWS and sorted(p.name for p in cache.iterdir()) == sorted(f"wikiart-{i}.jpg" for i in range(ROWS))
    # An upstream JPEG that needs no resizing is cached byte for byte; a PNG is re-encoded.
    upstream = pq.read_table(gallery, columns=["image"]).column("image").to_pylist()
    assert Path(first[0].image_path).read_bytes() == upstream[0]["bytes"]
    with Image.open(first[1].image_path) as image:
        assert image.format == "JPEG" and upstream[1]["bytes"].startswith(b"\x89PNG")
    stamps = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in cache.iterdir()}

    again = list(open_source(f"wikiart:{gallery}", remote=options).artworks)
    assert again == first
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in cache.iterdir()} == stamps


def test_bad_images_are_failures_and_string_labels_pass_through(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    big = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    features = datasets.Features({"image": datasets.Image(), "artist": datasets.Value("string"), "title": datasets.Value("string")})
    table = {
        "image": [{"bytes": _jpeg(big), "path": None}, {"bytes": b"not an image", "path": None}, big],
        "artist": ["berthe-morisot", "claude-monet", "Unknown Artist"],
        "title": ["Le Berceau", "", "Untitled"],
    }
    path = tmp_path / "odd.parquet"
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(path))
    source = open_source(f"wikiart:{path}", remote=RemoteOptions(cache_dir=tmp_path / "cache", image_size=100))
    artworks = list(source.artworks)
    assert [(a.id, a.artist, a.title, a.style) for a in artworks] == [("wikiart-0", "berthe-morisot", "Le Berceau", ""),
                                                                      ("wikiart-2", "", "Untitled", "")]
    assert [failure[0] for failure in source.failures] == ["wikiart-1"]
    cache = cache_folder(tmp_path / "cache", source.name)
    assert not (cache / "wikiart-1.jpg").exists()
    for artwork in artworks:  # the longest side is brought down to image_size
        with Image.open(artwork.image_path) as image:
            assert image.size == (100, 75)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".jpg")] == []


def test_a_parquet_without_images_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    datasets.Dataset.from_dict({"artist": ["claude-monet"], "style": ["Impressionism"]}).to_parquet(str(path))
    with pytest.raises(SourceError, match=r"labels\.parquet.*no `image` column.*artist"):
        open_source(f"wikiart:{path}", remote=RemoteOptions(cache_dir=tmp_path / "cache"))


@pytest.mark.parametrize("missing", ["missing.parquet", "missing-folder"])
def test_a_missing_dataset_is_refused(tmp_path: Path, missing: str) -> None:
    with pytest.raises(SourceError, match=rf"cannot open wikiart dataset .*{missing}"):
        open_source(f"wikiart:{tmp_path / missing}", remote=RemoteOptions(cache_dir=tmp_path / "cache"))
    assert not os.path.exists(tmp_path / "cache")
