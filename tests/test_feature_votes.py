"""The local-feature vote shortlist (no Triton): real ORB descriptors of Met paintings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from whatart.retrieval_service.evaluation.protocols import make_query
from whatart.retrieval_service.features.local_features import FeatureExtractor
from whatart.retrieval_service.images import decode_image
from whatart.retrieval_service.index import feature_votes


@pytest.fixture(scope="module")
def gallery_features(met_images: list[Path]) -> list[np.ndarray]:
    extractor = FeatureExtractor()
    return [extractor.extract(Image.open(path).convert("RGB")).descriptors for path in met_images[:60]]


def _index(features: list[np.ndarray], padding: int = 0) -> feature_votes.faiss.IndexBinary:
    """Row i owns painting i's descriptors; `padding` random descriptors (owned 500 at a time
    by rows after the paintings) grow the index past the exhaustive-search size."""
    owners = np.concatenate([np.full(len(d), row) for row, d in enumerate(features)])
    descriptors = np.concatenate(features)
    if padding:
        noise = np.random.default_rng(1).integers(0, 256, (padding, 32), dtype=np.uint8)
        descriptors = np.concatenate([descriptors, noise])
        owners = np.concatenate([owners, len(features) + np.arange(padding) // 500])
    return feature_votes.build(descriptors, owners)


@pytest.mark.parametrize(("paintings", "padding"), [(30, 0), (60, 40_000)], ids=["exhaustive", "inverted-lists"])
def test_a_photo_votes_for_its_painting_first(met_images: list[Path], gallery_features: list[np.ndarray],
                                              paintings: int, padding: int, tmp_path: Path) -> None:
    path = tmp_path / "votes.faiss"
    feature_votes.save(_index(gallery_features[:paintings], padding), path)
    index = feature_votes.load(path)
    assert isinstance(index, feature_votes.faiss.IndexBinaryIVF) == (padding > 0)
    extractor = FeatureExtractor()
    for row in (3, 17, 25):
        photo = decode_image(make_query("photo", Image.open(met_images[row]), seed=0, index=row), 10**8)
        voted = feature_votes.vote(index, extractor.extract(photo).descriptors, 5, lists_probed=8)
        assert voted[0][0] == row, voted
        assert voted[0][1] > 3 * voted[1][1], voted


def test_nothing_to_vote_with_gives_an_empty_shortlist(gallery_features: list[np.ndarray]) -> None:
    index = _index(gallery_features)
    assert feature_votes.vote(index, None, 5, 8) == []
    assert feature_votes.vote(index, gallery_features[0], 0, 8) == []
