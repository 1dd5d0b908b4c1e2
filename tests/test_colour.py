"""Colour signatures, and the re-ranking they drive for photos with too little texture to
verify: a gallery of near-blank tinted canvases ingested and searched through a real Triton."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from whatart.retrieval_service.features import colour
from whatart.retrieval_service.features.local_features import FeatureExtractor
from whatart.retrieval_service.identify.identifier import Identifier
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.encoder import TritonEncoder

from tests.conftest import TritonEndpoints
from tests.helpers import run_cli, triton_key

TINTS = [(236, 232, 222), (226, 232, 240), (240, 226, 226), (228, 238, 226), (214, 205, 190), (196, 200, 206),
         (244, 240, 200), (230, 220, 236), (205, 214, 214), (250, 236, 196), (220, 200, 196), (200, 214, 200)]


def _canvas(tint: tuple[int, int, int]) -> Image.Image:
    """A near-monochrome painting: one tint, a faint inner square (a Minimalism canvas)."""
    image = Image.new("RGB", (224, 224), tint)
    image.paste(tuple(max(0, c - 6) for c in tint), (48, 48, 176, 176))
    return image


def _blurred_rotated(image: Image.Image, angle: float) -> bytes:
    rotated = image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    buffer = io.BytesIO()
    rotated.filter(ImageFilter.GaussianBlur(3)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_the_signature_ignores_rotation_fill_and_separates_tints() -> None:
    extractor = FeatureExtractor()
    canvases = np.stack([extractor.extract(_canvas(tint)).colour for tint in TINTS])
    for i, tint in enumerate(TINTS):
        photo = extractor.extract(Image.open(io.BytesIO(_blurred_rotated(_canvas(tint), 30)))).colour
        distances = colour.distances(photo, canvases)
        others = np.delete(distances, i)
        # the black corners would pull L down by ~20 if they were counted
        assert distances[i] < 0.6 * others.min(), (i, distances.round(1))


@pytest.fixture(scope="module")
def canvas_index(triton: TritonEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("canvases")
    rows = []
    for i, tint in enumerate(TINTS):
        _canvas(tint).save(folder / f"{i}.png")
        rows.append(f"canvas-{i},{i}.png,Painter,Canvas {i},abstract,Minimalism,1965")
    (folder / "gallery.csv").write_text("id,file,artist,title,genre,style,date\n" + "\n".join(rows) + "\n")
    index = folder / "index"
    result = run_cli("ingest", str(folder / "gallery.csv"), "--index", str(index), "--triton-url", triton.grpc_url, "--no-progress")
    assert result.returncode == 0, result.stderr
    return index


async def _top1(index: Path, triton: TritonEndpoints, settings: Settings) -> list[str]:
    encoder = TritonEncoder(triton.grpc_url, "sscd", api_key=triton_key())
    gallery = Gallery.load(index)
    try:
        identifier = Identifier(gallery, encoder, await encoder.served_model(), settings)
        answers = [await identifier.identify(_blurred_rotated(_canvas(tint), 25), k=3) for tint in TINTS]
    finally:
        await encoder.close()
        gallery.close()
    assert not any(answer.in_gallery for answer in answers), "nothing to verify: never claimed as a certain match"
    return [answer.matches[0].artwork.id for answer in answers]


def test_blurred_blank_canvases_are_told_apart_by_colour(canvas_index: Path, triton: TritonEndpoints) -> None:
    expected = [f"canvas-{i}" for i in range(len(TINTS))]
    with_colour = asyncio.run(_top1(canvas_index, triton, Settings(colour_rerank_below=50)))  # off by default with SSCD
    without = asyncio.run(_top1(canvas_index, triton, Settings()))
    assert with_colour == expected
    assert sum(a == b for a, b in zip(without, expected, strict=True)) < len(TINTS), "the embedding alone confuses some tints"
