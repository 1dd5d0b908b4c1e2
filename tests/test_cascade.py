"""The cascade (embedding → views → verified) on the real demo index through the real Triton:
each stage decides when its calibrated thresholds say so, and only then."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from whatart.retrieval_service.evaluation.early_answers import fit_stage
from whatart.retrieval_service.evaluation.protocols import make_query
from whatart.retrieval_service.identify.answer import EMBEDDING, VERIFIED, VIEWS, Identification
from whatart.retrieval_service.identify.calibration import Calibration, EarlyAnswer
from whatart.retrieval_service.identify.identifier import Identifier
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.encoder import TritonEncoder

from tests.conftest import TritonEndpoints
from tests.helpers import abstract_painting, triton_key

ANYTHING = EarlyAnswer(-1.0, 0.0, 0.97)
"""Answers every query (any similarity, any margin)."""


@pytest.fixture()
def index(demo_index: Path, tmp_path: Path) -> Path:
    """A private copy of the demo index, whose calibration a test may rewrite."""
    copy = tmp_path / "index"
    shutil.copytree(demo_index, copy, symlinks=True)
    return copy


def _calibrate(index: Path, early: dict[str, EarlyAnswer]) -> None:
    Calibration(20, 4.0, -4.0 * np.log1p(19.5), "test", early).save((index / "current").resolve())


async def _identify(index: Path, triton: TritonEndpoints, images: list[bytes], mode: str = "cascade") -> list[Identification]:
    encoder = TritonEncoder(triton.grpc_url, "sscd", api_key=triton_key())
    gallery = Gallery.load(index)
    try:
        identifier = Identifier(gallery, encoder, await encoder.served_model(), Settings(identify_mode=mode))
        return [await identifier.identify(image, k=5) for image in images]
    finally:
        gallery.close()
        await encoder.close()


def _photo(path: Path, index: int = 0) -> bytes:
    with Image.open(path) as image:
        return make_query("photo", image, seed=0, index=index)


def test_a_gallery_image_is_answered_by_its_embedding_alone(index: Path, triton: TritonEndpoints, met_images: list[Path]) -> None:
    (answer,) = asyncio.run(_identify(index, triton, [met_images[3].read_bytes()]))
    assert answer.decided_by == EMBEDDING and answer.matches[0].artwork.id == f"met-{met_images[3].stem}"
    assert answer.in_gallery and answer.confidence == Settings().default_early_confidence
    assert set(answer.evidence) == {EMBEDDING}, "no later stage ran"
    assert "verify" not in answer.timings_ms and answer.matches[0].inliers is None
    assert answer.to_json()["decided_by"] == EMBEDDING


def test_the_views_stage_answers_when_the_embedding_may_not(index: Path, triton: TritonEndpoints, met_images: list[Path]) -> None:
    _calibrate(index, {VIEWS: ANYTHING})  # no early answer from the plain photo's embedding
    (answer,) = asyncio.run(_identify(index, triton, [_photo(met_images[5])]))
    assert answer.decided_by == VIEWS and set(answer.evidence) == {EMBEDDING, VIEWS}
    assert answer.confidence == ANYTHING.precision and answer.in_gallery
    assert "verify" not in answer.timings_ms
    assert answer.matches[0].artwork.id == f"met-{met_images[5].stem}"


def test_verification_decides_when_no_early_stage_may(index: Path, triton: TritonEndpoints, met_images: list[Path]) -> None:
    _calibrate(index, {})
    present, absent = asyncio.run(_identify(index, triton, [met_images[7].read_bytes(), abstract_painting(seed=11)]))
    assert present.decided_by == VERIFIED and present.matches[0].artwork.id == f"met-{met_images[7].stem}"
    assert present.matches[0].inliers >= 20 and present.in_gallery and "verify" in present.timings_ms
    assert absent.decided_by == VERIFIED and not absent.in_gallery


def test_a_work_not_in_the_gallery_is_not_answered_early_by_default(index: Path, triton: TritonEndpoints) -> None:
    answers = asyncio.run(_identify(index, triton, [abstract_painting(seed=s) for s in range(4)]))
    assert all(a.decided_by == VERIFIED and not a.in_gallery for a in answers), [(a.decided_by, a.evidence) for a in answers]


def test_forced_verification_runs_every_stage_and_records_what_they_saw(index: Path, triton: TritonEndpoints,
                                                                        met_images: list[Path]) -> None:
    (answer,) = asyncio.run(_identify(index, triton, [met_images[3].read_bytes()], mode="verified"))
    assert answer.decided_by == VERIFIED and set(answer.evidence) == {EMBEDDING, VIEWS}
    assert answer.evidence[EMBEDDING].top_id == f"met-{met_images[3].stem}" and answer.evidence[EMBEDDING].top > 0.95
    assert answer.matches[0].inliers >= 20


def test_early_thresholds_bound_the_error_of_the_answers_they_let_through() -> None:
    rng = np.random.default_rng(0)
    right = rng.random(4000) < 0.9
    top = np.where(right, rng.uniform(0.5, 1.0, 4000), rng.uniform(0.0, 0.8, 4000))
    runner_up = top - np.where(right, rng.uniform(0.0, 0.5, 4000), rng.uniform(0.0, 0.1, 4000))
    early = fit_stage(top, runner_up, right, max_error=0.005)
    assert early is not None
    taken = (top >= early.min_similarity) & (top - runner_up >= early.min_margin)
    wrong = int((taken & ~right).sum())
    assert (wrong + 1) / (taken.sum() + 1) <= 0.005 and taken.sum() > 1000
    assert early.precision == pytest.approx(1 - wrong / taken.sum(), abs=1e-4)
    assert fit_stage(top[:100], runner_up[:100], right[:100]) is None, "100 queries cannot show a 0.5 % error rate"
