"""The nga source against a real loopback IIIF-like image server: the CSV joins, the fetching
(retries, failures, concurrency, rate limit, resume) and the URL form of the location."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.ingest.sources import nga
from whatart.retrieval_service.ingest.sources.base import RemoteOptions, SourceError
from whatart.retrieval_service.ingest.sources.nga import nga_source

from tests.conftest import TritonEndpoints
from tests.helpers import run_cli

IMAGE_PATH = re.compile(r"^/iiif/([\w-]+)/full/!(\d+),(\d+)/0/default\.jpg$")


@dataclass
class ImageServer:
    """What the loopback server was asked, and how it is told to misbehave (per uuid)."""

    url: str = ""
    csv_dir: Path | None = None
    delay_s: float = 0.0
    fail_503: dict[str, int] = field(default_factory=dict)
    """uuid -> how many more times to answer `busy_status` before serving the image"""
    busy_status: int = 503
    retry_after: str | None = "0"
    not_found: set[str] = field(default_factory=set)
    html: set[str] = field(default_factory=set)
    requests: list[tuple[str, float]] = field(default_factory=list)
    csv_requests: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def image_requests(self, uuid: str | None = None) -> list[str]:
        with self.lock:
            return [path for path, _ in self.requests if uuid is None or f"/iiif/{uuid}/" in path]


def jpeg(size: int, seed: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), tuple(ord(c) * 7 % 256 for c in (seed * 3)[:3])).save(buffer, "JPEG")
    return buffer.getvalue()


def handler_for(state: ImageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def reply(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.startswith("/data/"):
                state.csv_requests.append(self.path)
                file = state.csv_dir / self.path.removeprefix("/data/") if state.csv_dir else None
                if file is None or not file.is_file():
                    return self.reply(404, b"not found", "text/plain")
                return self.reply(200, file.read_bytes(), "text/csv")
            match = IMAGE_PATH.match(self.path)
            if not match:
                return self.reply(404, b"not found", "text/plain")
            uuid, size = match.group(1), int(match.group(2))
            with state.lock:
                state.requests.append((self.path, time.monotonic()))
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                fail = state.fail_503.get(uuid, 0) > 0
                if fail:
                    state.fail_503[uuid] -= 1
            try:
                time.sleep(state.delay_s)
                if fail:
                    headers = {"Retry-After": state.retry_after} if state.retry_after is not None else {}
                    self.reply(state.busy_status, b"busy", "text/plain", headers)
                elif uuid in state.not_found:
                    self.reply(404, b"no such image", "text/plain")
                elif uuid in state.html:
                    self.reply(200, b"<html>login</html>", "text/html; charset=utf-8")
                else:
                    self.reply(200, jpeg(size, uuid), "image/jpeg")
            finally:
                with state.lock:
                    state.in_flight -= 1

    return Handler


@pytest.fixture
def server() -> ImageServer:
    state = ImageServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nga, "BACKOFF_BASE_S", 0.01)


def closed_port() -> int:
    """A loopback port nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_csv(path: Path, header: list[str], rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column, "") for column in header})


OBJECT_COLUMNS = ["objectid", "accessioned", "accessionnum", "title", "displaydate", "beginyear", "endyear", "medium", "attribution",
                  "classification", "subclassification", "visualbrowsertimespan", "visualbrowserstyle", "provenancetext", "creditline"]
IMAGE_COLUMNS = ["uuid", "iiifurl", "iiifthumburl", "viewtype", "sequence", "width", "height", "maxpixels", "created", "modified",
                 "depictstmsobjectid", "assistivetext"]
CONSTITUENT_COLUMNS = ["constituentid", "ulanid", "preferreddisplayname", "forwarddisplayname", "lastname", "displaydate",
                       "artistofngaobject", "beginyear", "endyear", "visualbrowsertimespan", "nationality", "visualbrowsernationality",
                       "constituenttype"]
LINK_COLUMNS = ["objectid", "constituentid", "displayorder", "roletype", "role", "prefix", "suffix", "displaydate", "beginyear",
                "endyear", "country", "zipcode"]


def image_row(base: str, objectid: int, uuid: str, viewtype: str = "primary", sequence: int = 0) -> dict[str, object]:
    return {"uuid": uuid, "iiifurl": f"{base}/iiif/{uuid}", "iiifthumburl": f"{base}/iiif/{uuid}/full/!200,200/0/default.jpg",
            "viewtype": viewtype, "sequence": sequence, "width": 3000, "height": 2000, "maxpixels": 640,
            "created": "2013-01-01 00:00:00-05", "modified": "2023-01-01 00:00:00-05", "depictstmsobjectid": objectid,
            "assistivetext": "a picture"}


def write_gallery(folder: Path, base: str) -> Path:
    """Eleven objects in the upstream format: six yield artworks, two have no primary image, three fail to fetch."""
    folder.mkdir(parents=True, exist_ok=True)
    objects = [
        {"objectid": 1003, "title": "Watson and the Shark", "displaydate": "1778", "classification": "Painting",
         "visualbrowserstyle": "Neoclassical", "attribution": "John Singleton Copley", "provenancetext": "long text, " * 50},
        {"objectid": 1001, "title": "The Japanese Footbridge", "displaydate": "1899", "classification": "Painting",
         "visualbrowserstyle": "Impressionist", "attribution": "Claude Monet"},
        {"objectid": 1007, "title": "No Image At All", "displaydate": "1900", "classification": "Painting", "attribution": "X"},
        {"objectid": 1002, "title": "Self-Portrait", "displaydate": "1889", "classification": "Painting",
         "visualbrowserstyle": "Post-Impressionist", "attribution": "Vincent van Gogh"},
        {"objectid": 1009, "title": "Gone Missing", "displaydate": "1850", "classification": "Painting", "attribution": "Y"},
        {"objectid": 1004, "title": "Melencolia I", "displaydate": "1514", "classification": "Print", "visualbrowserstyle": "",
         "attribution": "Albrecht Dürer"},
        {"objectid": 1008, "title": "Only An Alternate View", "displaydate": "1700", "classification": "Drawing", "attribution": "Z"},
        {"objectid": 1010, "title": "Behind A Login Page", "displaydate": "1600", "classification": "Painting", "attribution": "W"},
        {"objectid": 1005, "title": "The Feast of the Gods", "displaydate": "1514/1529", "classification": "Painting",
         "visualbrowserstyle": "Renaissance", "attribution": "Giovanni Bellini and Titian"},
        {"objectid": 1011, "title": "Unreachable", "displaydate": "1500", "classification": "Painting", "attribution": "V"},
        {"objectid": 1006, "title": "Portrait of a Lady", "displaydate": "c. 1760", "classification": "Painting",
         "visualbrowserstyle": "Rococo", "attribution": "French 18th Century"},
    ]
    images = [
        image_row(base, 1003, "u1003-late", sequence=10),
        image_row(base, 1003, "u1003-early", sequence=9),  # numerically first, although "10" < "9" as text
        image_row(base, 1003, "u1003-alt", viewtype="alternate", sequence=0),
        image_row(base, 1001, "u1001"),
        image_row(base, 1002, "u1002"),
        image_row(base, 1009, "u1009"),
        image_row(base, 1004, "u1004"),
        image_row(base, 1008, "u1008", viewtype="alternate"),
        image_row(base, 1010, "u1010"),
        image_row(base, 1005, "u1005"),
        {**image_row(base, 1011, "u1011"), "iiifurl": f"http://127.0.0.1:{closed_port()}/iiif/u1011"},
        image_row(base, 1006, "u1006"),
        image_row(base, 9999, "u9999"),  # an image of an object not in objects.csv
    ]
    constituents = [
        {"constituentid": 1, "preferreddisplayname": "Copley, John Singleton", "constituenttype": "individual"},
        {"constituentid": 2, "preferreddisplayname": "Monet, Claude", "constituenttype": "individual"},
        {"constituentid": 3, "preferreddisplayname": "Gogh, Vincent van", "constituenttype": "individual"},
        {"constituentid": 4, "preferreddisplayname": "Dürer, Albrecht", "constituenttype": "individual"},
        {"constituentid": 5, "preferreddisplayname": "Rosenwald Collection", "constituenttype": "collection"},
        {"constituentid": 6, "preferreddisplayname": "Bellini, Giovanni", "constituenttype": "individual"},
        {"constituentid": 7, "preferreddisplayname": "Titian", "constituenttype": "individual"},
    ]
    links = [
        {"objectid": 1003, "constituentid": 1, "displayorder": 1, "roletype": "artist", "role": "painter"},
        {"objectid": 1001, "constituentid": 2, "displayorder": 1, "roletype": "artist", "role": "artist"},
        {"objectid": 1002, "constituentid": 3, "displayorder": 1, "roletype": "artist", "role": "painter"},
        {"objectid": 1004, "constituentid": 5, "displayorder": 1, "roletype": "owner", "role": "donor"},
        {"objectid": 1004, "constituentid": 4, "displayorder": 2, "roletype": "artist", "role": "printmaker"},
        {"objectid": 1005, "constituentid": 7, "displayorder": 2, "roletype": "artist", "role": "painter"},
        {"objectid": 1005, "constituentid": 6, "displayorder": 1, "roletype": "artist", "role": "painter"},
    ]
    write_csv(folder / "objects.csv", OBJECT_COLUMNS, objects)
    write_csv(folder / "published_images.csv", IMAGE_COLUMNS, images)
    write_csv(folder / "constituents.csv", CONSTITUENT_COLUMNS, constituents)
    write_csv(folder / "objects_constituents.csv", LINK_COLUMNS, links)
    return folder


def write_plain_gallery(folder: Path, base: str, count: int) -> Path:
    """`count` paintings, each with one primary image that the server serves."""
    folder.mkdir(parents=True, exist_ok=True)
    objects = [{"objectid": 2000 + i, "title": f"Study {i}", "classification": "Painting", "attribution": "Anon"} for i in range(count)]
    write_csv(folder / "objects.csv", OBJECT_COLUMNS, objects)
    write_csv(folder / "published_images.csv", IMAGE_COLUMNS, [image_row(base, 2000 + i, f"p{i}") for i in range(count)])
    write_csv(folder / "constituents.csv", CONSTITUENT_COLUMNS, [])
    write_csv(folder / "objects_constituents.csv", LINK_COLUMNS, [])
    return folder


EXPECTED = [
    ("nga-1003", "Copley, John Singleton", "Watson and the Shark", "Painting", "Neoclassical", "1778"),
    ("nga-1001", "Monet, Claude", "The Japanese Footbridge", "Painting", "Impressionist", "1899"),
    ("nga-1002", "Gogh, Vincent van", "Self-Portrait", "Painting", "Post-Impressionist", "1889"),
    ("nga-1004", "Dürer, Albrecht", "Melencolia I", "Print", "", "1514"),
    ("nga-1005", "Bellini, Giovanni; Titian", "The Feast of the Gods", "Painting", "Renaissance", "1514/1529"),
    ("nga-1006", "French 18th Century", "Portrait of a Lady", "Painting", "Rococo", "c. 1760"),
]


def test_joins_metadata_fetches_images_and_reports_failures(server: ImageServer, tmp_path: Path) -> None:
    folder = write_gallery(tmp_path / "data", server.url)
    server.fail_503 = {"u1002": 2}
    server.not_found, server.html = {"u1009"}, {"u1010"}
    cache = tmp_path / "cache"
    options = RemoteOptions(cache_dir=cache, image_size=64, concurrency=3, requests_per_second=1000, retries=2, timeout_s=5)

    source = nga_source(str(folder), options)
    assert source.name == "nga" and source.total == 9  # every object with a primary image, before fetching
    assert server.image_requests() == []  # lazy: nothing fetched until iterated
    artworks = list(source.artworks)

    assert [(a.id, a.artist, a.title, a.genre, a.style, a.date) for a in artworks] == EXPECTED
    assert {a.source for a in artworks} == {"nga"}
    for artwork in artworks:
        assert artwork.image_path == str(cache / "nga" / "images" / f"{artwork.id.removeprefix('nga-')}.jpg")
        with Image.open(artwork.image_path) as image:
            assert image.format == "JPEG" and image.size == (64, 64)
    assert len(server.image_requests("u1002")) == 3  # 503, 503, then the image
    assert server.image_requests("u1003-early") and not server.image_requests("u1003-late") and not server.image_requests("u1003-alt")
    assert not server.image_requests("u1008") and not server.image_requests("u9999")
    assert all("/full/!64,64/0/default.jpg" in path for path in server.image_requests())
    assert len(server.image_requests("u1009")) == 1  # a 404 is not retried
    assert len(server.image_requests("u1010")) == 1

    reasons = dict(source.failures)
    assert set(reasons) == {"nga-1009", "nga-1010", "nga-1011"}
    assert f"{server.url}/iiif/u1009/full/!64,64/0/default.jpg" in reasons["nga-1009"] and "HTTP 404" in reasons["nga-1009"]
    assert "u1010" in reasons["nga-1010"] and "not an image" in reasons["nga-1010"] and "text/html" in reasons["nga-1010"]
    assert "u1011" in reasons["nga-1011"] and "ConnectError" in reasons["nga-1011"] and "3 attempt" in reasons["nga-1011"]
    images = cache / "nga" / "images"
    assert sorted(p.name for p in images.iterdir()) == sorted(f"{a.id.removeprefix('nga-')}.jpg" for a in artworks)  # no .part left


def test_gives_up_after_retries_on_5xx(server: ImageServer, tmp_path: Path) -> None:
    folder = write_plain_gallery(tmp_path / "data", server.url, 2)
    server.fail_503 = {"p0": 100}
    options = RemoteOptions(cache_dir=tmp_path / "cache", image_size=32, concurrency=2, requests_per_second=1000, retries=3)
    source = nga_source(str(folder), options)
    assert [a.id for a in source.artworks] == ["nga-2001"]
    assert len(server.image_requests("p0")) == 4
    assert source.failures == [("nga-2000", f"{server.url}/iiif/p0/full/!32,32/0/default.jpg: HTTP 503 after 4 attempt(s)")]


def test_retry_after_is_honoured_over_backoff(server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nga, "BACKOFF_BASE_S", 3.0)  # the server says Retry-After: 0, so nobody waits this long
    folder = write_plain_gallery(tmp_path / "data", server.url, 1)
    server.fail_503 = {"p0": 2}
    started = time.monotonic()
    source = nga_source(str(folder), RemoteOptions(cache_dir=tmp_path / "cache", image_size=32, requests_per_second=1000))
    assert [a.id for a in source.artworks] == ["nga-2000"]
    assert time.monotonic() - started < 5 and len(server.image_requests("p0")) == 3


def test_backs_off_exponentially_on_429_without_retry_after(server: ImageServer, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nga, "BACKOFF_BASE_S", 0.1)
    folder = write_plain_gallery(tmp_path / "data", server.url, 1)
    server.fail_503, server.busy_status, server.retry_after = {"p0": 2}, 429, None
    source = nga_source(str(folder), RemoteOptions(cache_dir=tmp_path / "cache", image_size=32, requests_per_second=1000))
    assert [a.id for a in source.artworks] == ["nga-2000"]
    times = [t for _, t in server.requests]
    assert len(times) == 3
    assert 0.1 <= times[1] - times[0] <= 0.2 + 0.1 and 0.2 <= times[2] - times[1] <= 0.4 + 0.1  # base * 2**n, plus up to as much jitter


def test_concurrency_is_bounded(server: ImageServer, tmp_path: Path) -> None:
    folder = write_plain_gallery(tmp_path / "data", server.url, 16)
    server.delay_s = 0.05
    options = RemoteOptions(cache_dir=tmp_path / "cache", image_size=32, concurrency=3, requests_per_second=1000)
    artworks = list(nga_source(str(folder), options).artworks)
    assert [a.id for a in artworks] == [f"nga-{2000 + i}" for i in range(16)]  # order kept although fetched in parallel
    assert len(server.image_requests()) == 16
    assert 2 <= server.max_in_flight <= 3


def test_downloads_ahead_of_the_consumer_are_bounded(server: ImageServer, tmp_path: Path) -> None:
    folder = write_plain_gallery(tmp_path / "data", server.url, 40)
    options = RemoteOptions(cache_dir=tmp_path / "cache", image_size=32, concurrency=2, requests_per_second=1000)
    artworks = iter(nga_source(str(folder), options).artworks)
    assert next(artworks).id == "nga-2000"
    time.sleep(0.3)  # a slow consumer: the workers may only run a window ahead of it
    ahead = len(server.image_requests())
    assert ahead <= 2 * nga.WINDOW_PER_WORKER + 1
    artworks.close()  # stopping early cancels what was queued
    time.sleep(0.1)
    assert len(server.image_requests()) == ahead


def test_rate_limit_spaces_requests(server: ImageServer, tmp_path: Path) -> None:
    folder = write_plain_gallery(tmp_path / "data", server.url, 12)
    options = RemoteOptions(cache_dir=tmp_path / "cache", image_size=32, concurrency=4, requests_per_second=20)
    started = time.monotonic()
    assert len(list(nga_source(str(folder), options).artworks)) == 12
    elapsed = time.monotonic() - started
    times = sorted(t for _, t in server.requests)
    assert elapsed >= 11 / 20  # request starts are spaced 1/20 s apart, the first one at once
    assert times[-1] - times[0] >= 11 / 20 - 0.05  # as seen by the server (less a little scheduling jitter)


def test_second_run_resumes_from_the_cache(server: ImageServer, tmp_path: Path) -> None:
    folder = write_plain_gallery(tmp_path / "data", server.url, 5)
    options = RemoteOptions(cache_dir=tmp_path / "cache", image_size=32, requests_per_second=1000)
    first = [a.id for a in nga_source(str(folder), options).artworks]
    assert len(server.image_requests()) == 5
    (tmp_path / "cache" / "nga" / "images" / "2003.jpg").unlink()  # as if a run was killed before this one
    second = nga_source(str(folder), options)
    assert [a.id for a in second.artworks] == first and second.failures == []
    assert len(server.image_requests()) == 6 and len(server.image_requests("p3")) == 2


def test_limit(server: ImageServer, tmp_path: Path) -> None:
    folder = write_gallery(tmp_path / "data", server.url)
    source = nga_source(str(folder), RemoteOptions(cache_dir=tmp_path / "cache", limit=2, image_size=32, requests_per_second=1000))
    assert source.total == 2
    assert [a.id for a in source.artworks] == ["nga-1003", "nga-1001"]
    assert len(server.image_requests()) == 2
    with pytest.raises(SourceError, match="limit"):
        nga_source(str(folder), RemoteOptions(cache_dir=tmp_path / "cache", limit=-1))


def test_csvs_from_a_url_are_downloaded_once(server: ImageServer, tmp_path: Path) -> None:
    server.csv_dir = write_gallery(tmp_path / "served", server.url)
    server.not_found, server.html = {"u1009"}, {"u1010"}
    options = RemoteOptions(cache_dir=tmp_path / "cache", image_size=32, requests_per_second=1000, retries=0)
    source = nga_source(f"{server.url}/data/", options)
    assert len(server.csv_requests) == 4
    assert [(a.id, a.artist, a.title, a.genre, a.style, a.date) for a in source.artworks] == EXPECTED
    assert sorted(p.name for p in (tmp_path / "cache" / "nga").glob("*.csv")) == sorted(nga.COLUMNS)
    nga_source(f"{server.url}/data", options)
    assert len(server.csv_requests) == 4  # reused from the cache


def test_missing_csv_from_a_url(server: ImageServer, tmp_path: Path) -> None:
    server.csv_dir = write_gallery(tmp_path / "served", server.url)
    (server.csv_dir / "constituents.csv").unlink()
    with pytest.raises(SourceError, match=r"constituents\.csv.*HTTP 404"):
        nga_source(f"{server.url}/data", RemoteOptions(cache_dir=tmp_path / "cache"))
    assert not (tmp_path / "cache" / "nga" / "constituents.csv").exists()


def test_missing_file_or_column(tmp_path: Path) -> None:
    folder = write_gallery(tmp_path / "data", "http://127.0.0.1:9")
    options = RemoteOptions(cache_dir=tmp_path / "cache")
    (folder / "objects_constituents.csv").unlink()
    with pytest.raises(SourceError, match=r"objects_constituents\.csv does not exist"):
        nga_source(str(folder), options)
    write_csv(folder / "objects_constituents.csv", [c for c in LINK_COLUMNS if c not in ("roletype", "displayorder")], [])
    with pytest.raises(SourceError, match=r"objects_constituents\.csv: missing column\(s\) displayorder, roletype"):
        nga_source(str(folder), options)
    with pytest.raises(SourceError, match="does not exist"):
        nga_source(str(tmp_path / "nowhere"), options)


def test_whatart_ingest_nga_through_triton(server: ImageServer, triton: TritonEndpoints, tmp_path: Path) -> None:
    folder = write_plain_gallery(tmp_path / "data", server.url, 6)
    server.not_found = {"p5"}
    result = run_cli("ingest", f"nga:{folder}", "--index", str(tmp_path / "index"), "--triton-url", triton.grpc_url,
                     "--cache-dir", str(tmp_path / "cache"), "--image-size", "96", "--requests-per-second", "1000", "--no-progress")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["source"] == "nga" and report["artworks"] == 5 and report["encoded"] == 5
    assert [(s["id"], "HTTP 404" in s["reason"]) for s in report["skipped"]] == [("nga-2005", True)]
    assert all("/full/!96,96/0/default.jpg" in path for path in server.image_requests())
    gallery = Gallery.load(tmp_path / "index")
    assert gallery.metadata.by_id("nga-2003").title == "Study 3"
    gallery.close()
