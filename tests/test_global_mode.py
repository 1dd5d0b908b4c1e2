"""`whatart serve --mode global`: one embedding, a global search, no verification."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import TritonEndpoints
from tests.helpers import abstract_painting, served


@pytest.fixture(scope="module")
def global_service(demo_index: Path, triton: TritonEndpoints) -> Iterator[str]:
    with served(demo_index, triton.grpc_url, "--mode", "global") as endpoints:
        yield endpoints.url


def _identify(url: str, data: bytes) -> dict:
    response = httpx.post(f"{url}/v1/identify", files={"image": ("x.jpg", data)}, data={"k": "3"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_global_mode_finds_gallery_images_without_verifying(global_service: str, met_images: list[Path]) -> None:
    for path in met_images[:5]:
        answer = _identify(global_service, path.read_bytes())
        top = answer["matches"][0]
        assert top["id"] == f"met-{path.stem}", (path, top["id"])
        assert set(answer["timings_ms"]) == {"decode", "triton", "search", "metadata"}
        assert all(match["inliers"] is None for match in answer["matches"]) and len(answer["matches"]) == 3
        assert answer["in_gallery"] and answer["confidence"] == pytest.approx(min(top["score"], 1.0), abs=1e-4)


def test_global_mode_answers_concurrent_requests_each_with_its_own_match(global_service: str, met_images: list[Path]) -> None:
    paths = met_images[10:26]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: _identify(global_service, p.read_bytes()), paths))
    tops = [answer["matches"][0]["id"] for answer in answers]
    assert tops == [f"met-{path.stem}" for path in paths]


def test_global_mode_says_not_in_the_gallery_below_the_similarity_threshold(global_service: str) -> None:
    answer = _identify(global_service, abstract_painting(seed=123))
    assert answer["matches"][0]["score"] < 0.9
    assert not answer["in_gallery"]
