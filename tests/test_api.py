"""The REST contract of `whatart serve`, over real HTTP against a real Triton."""

from __future__ import annotations

import io
import re
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import TritonEndpoints
from tests.helpers import abstract_painting

HARVESTERS = "met-435809"


@pytest.fixture(scope="module")
def http(service_url: str) -> httpx.Client:
    with httpx.Client(base_url=service_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def harvesters(met_images: list[Path]) -> bytes:
    return next(p for p in met_images if p.stem == HARVESTERS.removeprefix("met-")).read_bytes()


def test_health_reports_triton_and_the_gallery(http: httpx.Client, triton: TritonEndpoints) -> None:
    response = http.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body == {"status": "ok", "triton": "ready", "triton_replicas": {triton.grpc_url: "ready"},
                    "model": "sscd", "artworks": 174}


def test_identify_returns_ranked_matches_with_metadata(http: httpx.Client, harvesters: bytes) -> None:
    response = http.post("/v1/identify", files={"image": ("h.jpg", harvesters, "image/jpeg")})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "sscd" and body["took_ms"] > 0
    # the painting itself: its embedding alone is certain, nothing is verified (tests/test_cascade.py: each stage)
    assert body["decided_by"] == "embedding"
    assert set(body["timings_ms"]) == {"decode", "triton", "search", "metadata"}  # settled by its embedding: no search for more
    [painting] = body["paintings"]  # one painting, located by its own top match, no phantom beside it
    assert painting["matches"][0]["id"] == HARVESTERS and painting["decided_by"] == "embedding"
    assert body["in_gallery"] is True and body["confidence"] > 0.9
    matches = body["matches"]
    assert len(matches) == 5  # default k
    top = matches[0]
    assert top["id"] == HARVESTERS and top["title"] == "The Harvesters" and top["artist"] == "Pieter Bruegel the Elder"
    assert {"genre", "style", "date", "score", "inliers", "image_url"} <= set(top)
    assert top["inliers"] is None, "answered before verification"
    assert "image_path" not in top, "server paths must not leak"
    scores = [m["score"] for m in matches]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.99 > scores[1]


@pytest.mark.parametrize("where", ["form", "query"])
def test_k_is_honoured_as_form_field_or_query(http: httpx.Client, harvesters: bytes, where: str) -> None:
    files = {"image": ("h.jpg", harvesters)}
    response = (http.post("/v1/identify", files=files, data={"k": "3"}) if where == "form"
                else http.post("/v1/identify?k=3", files=files))
    assert response.status_code == 200 and len(response.json()["matches"]) == 3


def test_a_picture_that_is_not_in_the_gallery_is_said_to_be_absent(http: httpx.Client) -> None:
    body = http.post("/v1/identify", files={"image": ("new.jpg", abstract_painting(seed=3))}).json()
    assert body["in_gallery"] is False and body["confidence"] < 0.5
    assert body["decided_by"] == "verified", "only verification may say a work is absent"
    assert len(body["matches"]) == 5, "the closest works are still listed"


def test_a_png_upload_works_like_a_jpeg(http: httpx.Client, harvesters: bytes) -> None:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(harvesters)).save(buffer, "PNG")
    response = http.post("/v1/identify", files={"image": ("h.png", buffer.getvalue())})
    assert response.json()["matches"][0]["id"] == HARVESTERS


@pytest.mark.parametrize(
    "files, data, status, message",
    [
        ({"image": ("notes.txt", b"not a picture at all")}, {}, 400, "not an image"),
        ({"image": ("empty.jpg", b"")}, {}, 400, "empty"),
        ({"photo": ("h.jpg", b"x")}, {}, 400, "multipart form field 'image'"),
        ({"image": ("h.jpg", b"x")}, {"k": "0"}, 422, "k must be between 1 and 100"),
        ({"image": ("h.jpg", b"x")}, {"k": "many"}, 422, "k must be an integer"),
    ],
    ids=["text-file", "empty", "wrong-field", "k-zero", "k-text"],
)
def test_bad_requests_get_a_4xx_that_names_the_problem(http: httpx.Client, files, data, status, message) -> None:
    response = http.post("/v1/identify", files=files, data=data)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_oversized_uploads_are_refused(http: httpx.Client) -> None:
    response = http.post("/v1/identify", files={"image": ("big.jpg", b"\0" * (21 * 1024 * 1024))})
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    just_over = http.post("/v1/identify", files={"image": ("big.jpg", b"\0" * (20 * 1024 * 1024 + 1))})
    assert just_over.status_code == 413 and just_over.json()["detail"] == "the image exceeds the limit of 20,971,520 bytes", \
        "a body within the form's allowance is refused for its image, in those words"
    assert http.get("/health").status_code == 200, "the service stays up"


def test_artwork_metadata_and_image(http: httpx.Client, harvesters: bytes) -> None:
    artwork = http.get(f"/v1/artworks/{HARVESTERS}")
    assert artwork.status_code == 200 and artwork.json()["title"] == "The Harvesters"
    image = http.get(f"/v1/artworks/{HARVESTERS}/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == harvesters


@pytest.mark.parametrize("path", ["/v1/artworks/nope", "/v1/artworks/nope/image", "/v1/artworks/..%2F..%2Fetc%2Fpasswd/image"])
def test_unknown_artworks_are_404(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 404


def test_request_ids_are_echoed_and_metrics_exposed(http: httpx.Client, harvesters: bytes) -> None:
    response = http.post("/v1/identify", files={"image": ("h.jpg", harvesters)}, headers={"x-request-id": "abc123"})
    assert response.headers["x-request-id"] == "abc123"
    metrics = http.get("/metrics/").text
    assert 'whatart_identify_requests_total{outcome="ok"}' in metrics
    assert 'whatart_stage_seconds_bucket{le="0.001",stage="triton"}' in metrics
    assert "whatart_gallery_artworks 174.0" in metrics and "whatart_index_vectors 174.0" in metrics  # one view each (the default)
    for stage in ("decode", "triton", "search", "metadata", "verify"):
        assert f'whatart_stage_seconds_count{{stage="{stage}"}}' in metrics
    assert 'whatart_identify_seconds_count{api="rest"}' in metrics
    assert re.search(r'whatart_identify_decided_total\{stage="embedding"\} [1-9]', metrics)
    assert re.search(r'whatart_identify_decided_total\{stage="verified"\} [1-9]', metrics)
    assert re.search(r'whatart_triton_requests_total\{endpoint="127\.0\.0\.1:\d+",outcome="ok"\} [1-9]', metrics)


def test_artworks_are_searchable_by_text_and_filters(http: httpx.Client) -> None:
    body = http.get("/v1/artworks", params={"q": "bruegel harvest"}).json()
    assert body["total"] == 1 and [a["id"] for a in body["artworks"]] == [HARVESTERS]
    assert "image_path" not in body["artworks"][0]
    ranged = http.get("/v1/artworks", params={"style": "European Paintings", "year_from": 1560, "year_to": 1570}).json()
    assert HARVESTERS in [a["id"] for a in ranged["artworks"]]
    assert all(1560 <= int(a["date"][:4]) <= 1570 for a in ranged["artworks"])
    everything = http.get("/v1/artworks", params={"limit": 100}).json()
    assert everything["total"] == 174 and len(everything["artworks"]) == 100
    for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"year_from": "soon"}):
        response = http.get("/v1/artworks", params=bad)
        assert response.status_code == 422 and list(bad)[0] in response.text


def test_identify_can_be_restricted_by_metadata_fields(http: httpx.Client, harvesters: bytes) -> None:
    artist = http.get(f"/v1/artworks/{HARVESTERS}").json()["artist"]
    same = http.post("/v1/identify", files={"image": ("h.jpg", harvesters)}, data={"artist": artist, "k": "3"}).json()
    assert same["matches"][0]["id"] == HARVESTERS and {m["artist"] for m in same["matches"]} == {artist}
    other = http.post("/v1/identify", files={"image": ("h.jpg", harvesters)}, data={"artist": "Vincent van Gogh"}).json()
    assert HARVESTERS not in [m["id"] for m in other["matches"]]
    assert len(other["matches"]) == 4, "all four of the demo gallery's van Goghs, and nothing else"
    assert all(m["artist"] == "Vincent van Gogh" for m in other["matches"])
    refused = http.post("/v1/identify", files={"image": ("h.jpg", harvesters)}, data={"style": "x" * 1001})
    assert refused.status_code == 400 and "style filter is 1,001 characters" in refused.json()["detail"]
