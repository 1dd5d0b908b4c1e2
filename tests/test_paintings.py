"""Every painting in a photo, and why each match: the real service (demo gallery, real
Triton) over REST and gRPC, on a synthetic wall of two Met paintings and on photos of one."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from whatart.client.grpc_client import WhatartGrpcClient
from whatart.retrieval_service.evaluation.protocols import make_query, make_wall_query

from tests.helpers import ServiceEndpoints, json_lines, run_cli

WALL = ("met-436440", "met-459052")
"""two demo paintings whose wall (seed 0, index 2) the finder is known to separate"""


def _paths(met_images: list[Path], ids: tuple[str, ...]) -> list[Path]:
    by_id = {f"met-{path.stem}": path for path in met_images}
    return [by_id[i] for i in ids]


@pytest.fixture(scope="module")
def wall(met_images: list[Path]) -> bytes:
    return make_wall_query([Image.open(path) for path in _paths(met_images, WALL)], seed=0, index=2)


def _tops(answer: dict) -> list[str]:
    return [painting["matches"][0]["id"] for painting in answer["paintings"] if painting["in_gallery"]]


def test_a_wall_of_two_paintings_answers_both_largest_first(service: ServiceEndpoints, wall: bytes) -> None:
    answer = httpx.post(f"{service.url}/v1/identify", files={"image": ("wall.jpg", wall)}, timeout=120).json()
    assert sorted(_tops(answer)) == sorted(WALL)
    first, second = answer["paintings"]
    assert answer["matches"][0]["id"] == first["matches"][0]["id"] and answer["in_gallery"] == first["in_gallery"]

    def area(region: list[list[float]]) -> float:
        xs, ys = np.array(region).T
        return 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))

    assert area(first["region"]) >= area(second["region"]) > 0
    width, height = Image.open(io.BytesIO(wall)).size
    centres = [np.mean(painting["region"], axis=0) for painting in answer["paintings"]]
    assert all(0 < x < width and 0 < y < height for x, y in centres)
    assert abs(centres[0][0] - centres[1][0]) > width / 4  # side by side, not one region twice


def test_photos_of_one_painting_gain_no_phantoms(service: ServiceEndpoints, met_images: list[Path]) -> None:
    for index, path in enumerate(met_images[:12]):
        photo = make_query("photo", Image.open(path), seed=0, index=index)
        answer = httpx.post(f"{service.url}/v1/identify", files={"image": ("p.jpg", photo)}, timeout=120).json()
        assert len(answer["paintings"]) == 1, (path.name, _tops(answer))
        [painting] = answer["paintings"]
        assert painting["matches"][0]["id"] == answer["matches"][0]["id"] == f"met-{path.stem}"


def test_explain_returns_the_kept_correspondences_in_photo_and_gallery_pixels(service: ServiceEndpoints, wall: bytes,
                                                                              met_images: list[Path]) -> None:
    answer = httpx.post(f"{service.url}/v1/identify", files={"image": ("wall.jpg", wall)}, data={"explain": "true"},
                        timeout=120).json()
    width, height = Image.open(io.BytesIO(wall)).size
    for painting in answer["paintings"]:
        explanation = painting["explanation"]
        pairs = np.array(explanation["pairs"])
        gallery_size = Image.open(_paths(met_images, (painting["matches"][0]["id"],))[0]).size
        assert len(pairs) >= 20 and pairs.shape[1] == 4
        assert (pairs[:, 0] >= 0).all() and (pairs[:, 0] <= width).all() and (pairs[:, 1] <= height).all()
        assert (pairs[:, 2] <= gallery_size[0] + 1).all() and (pairs[:, 3] <= gallery_size[1] + 1).all()
        assert len(explanation["gallery_region"]) == 4
    plain = httpx.post(f"{service.url}/v1/identify", files={"image": ("wall.jpg", wall)}, timeout=120).json()
    assert all("explanation" not in painting for painting in plain["paintings"])  # only when asked


def test_grpc_answers_the_same_paintings_and_explanations(service: ServiceEndpoints, wall: bytes) -> None:
    rest = httpx.post(f"{service.url}/v1/identify", files={"image": ("wall.jpg", wall)}, data={"explain": "true"},
                      timeout=120).json()
    with WhatartGrpcClient(service.grpc) as client:
        answer = client.identify(wall, explain=True)
    assert _tops(answer) == _tops(rest)
    for ours, theirs in zip(answer["paintings"], rest["paintings"], strict=True):
        assert np.allclose(ours["region"], theirs["region"], atol=0.1)
        assert len(ours["explanation"]["pairs"]) == len(theirs["explanation"]["pairs"])


def test_the_cli_and_a_batch_write_every_painting(service: ServiceEndpoints, wall: bytes, tmp_path: Path) -> None:
    folder = tmp_path / "walls"
    folder.mkdir()
    (folder / "wall.jpg").write_bytes(wall)
    single = run_cli("identify", str(folder / "wall.jpg"), "--server", service.url, "--explain")
    assert single.returncode == 0, single.stderr
    [line] = json_lines(single.stdout)
    assert sorted(_tops(line)) == sorted(WALL) and all(p["explanation"]["pairs"] for p in line["paintings"])
    out = tmp_path / "results.jsonl"
    batch = run_cli("identify", "--batch", str(folder), "--out", str(out), "--grpc", service.grpc, "--no-progress")
    assert batch.returncode == 0, batch.stderr
    [answer] = json_lines(out.read_text())
    assert sorted(_tops(answer)) == sorted(WALL) and answer["paintings"][0]["region"] == line["paintings"][0]["region"]
