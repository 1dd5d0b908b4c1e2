"""Views, geometric verification, calibration and the harness' threshold choice (no Triton)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from whatart.retrieval_service.evaluation import harness
from whatart.retrieval_service.evaluation.protocols import make_query
from whatart.retrieval_service.features.local_features import FeatureExtractor
from whatart.retrieval_service.features.views import gallery_views, query_views
from whatart.retrieval_service.identify.answer import Candidate, Identification, rerank
from whatart.retrieval_service.identify.calibration import Calibration
from whatart.retrieval_service.identify.verification import count_inliers
from whatart.retrieval_service.images import decode_image
from whatart.retrieval_service.index.metadata import Artwork


def test_views_have_the_model_input_shape(met_images: list[Path]) -> None:
    image = Image.open(met_images[0]).convert("RGB")
    assert np.stack(gallery_views(image, 224, (0.0, 1.5, 3.0))).shape == (3, 224, 224, 3)
    assert query_views(image, 224, (0.0, -20.0, 20.0), (0.8,)).shape == (4, 224, 224, 3)


def test_a_photo_of_a_painting_verifies_against_it_and_not_against_others(met_images: list[Path]) -> None:
    extractor = FeatureExtractor()
    original = Image.open(met_images[10]).convert("RGB")
    photo = decode_image(make_query("photo", original, seed=0, index=3), 10**8)
    photo_features = extractor.extract(photo)
    same = count_inliers(photo_features, extractor.extract(original))
    others = [count_inliers(photo_features, extractor.extract(Image.open(p))) for p in met_images[20:40]]
    assert same >= 40, same
    assert max(others) < Calibration.default(20).min_inliers <= same


def test_a_blank_image_has_nothing_to_verify() -> None:
    extractor = FeatureExtractor()
    blank = extractor.extract(Image.new("RGB", (300, 200), (128, 128, 128)))
    assert count_inliers(blank, blank) == 0


def _candidate(name: str, score: float, inliers: int | None) -> Candidate:
    return Candidate(Artwork(id=name), 0, score, inliers)


def test_rerank_puts_verified_matches_first_by_inliers() -> None:
    ranked = rerank([_candidate("a", 0.9, 3), _candidate("b", 0.8, 60), _candidate("c", 0.7, 25), _candidate("d", 0.6, 0)], 20)
    assert [c.artwork.id for c in ranked] == ["b", "c", "a", "d"]


def test_default_calibration_is_monotonic_and_centred_on_the_threshold(tmp_path: Path) -> None:
    calibration = Calibration.default(20)
    confidences = [calibration.confidence(i) for i in range(0, 60, 5)]
    assert confidences == sorted(confidences)
    assert calibration.confidence(10) < 0.1 < 0.9 < calibration.confidence(40)
    assert calibration.confidence(19) < 0.5 < calibration.confidence(20)
    assert not calibration.in_gallery(19) and calibration.in_gallery(20)
    calibration.save(tmp_path)
    assert Calibration.load(tmp_path, default_min_inliers=99) == calibration
    assert Calibration.load(tmp_path / "none", default_min_inliers=7).min_inliers == 7


def _outcome(in_gallery: bool, inliers: int, correct: bool) -> harness.Outcome:
    truth = Artwork(id="t")
    top = truth if correct else Artwork(id="other")
    answer = Identification([Candidate(top, 0, 0.5, inliers)], inliers >= 20, 0.5, "m", 1.0, {}, "verified")
    return harness.Outcome(harness.Query(truth, in_gallery, b""), answer, latency_ms=1.0)


def test_threshold_and_confidence_are_fitted_from_outcomes() -> None:
    present = [_outcome(True, i, correct=True) for i in (30, 40, 50, 60, 25, 35)]
    absent = [_outcome(False, i, correct=False) for i in (0, 3, 5, 8, 12, 6)]
    threshold = harness.choose_threshold(present + absent)
    assert 13 <= threshold <= 25
    report = harness.open_set_report(present + absent, threshold)
    assert report.not_in_gallery_precision == 1.0 and report.not_in_gallery_recall == 1.0
    slope, intercept = harness.fit_confidence(present + absent)
    fitted = Calibration(threshold, slope, intercept, "test")
    assert slope > 0 and fitted.confidence(50) > 0.9 > 0.1 > fitted.confidence(3)


def test_retrieval_report_counts_ranks() -> None:
    outcomes = [_outcome(True, 30, correct=True), _outcome(True, 30, correct=False)]
    report = harness.retrieval_report(outcomes)
    assert (report.top1, report.top5, report.map5) == (0.5, 0.5, 0.5)
    assert report.failures == [{"id": "t", "got": "other", "rank": None, "decided_by": "verified"}]


@pytest.mark.parametrize("protocol", ["seed", "photo"])
def test_queries_are_reproducible_and_differ_by_index(protocol: str, met_images: list[Path]) -> None:
    image = Image.open(met_images[0])
    assert make_query(protocol, image, 0, 1) == make_query(protocol, image, 0, 1)
    assert make_query(protocol, image, 0, 1) != make_query(protocol, image, 0, 2)
