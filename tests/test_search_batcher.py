"""Concurrent identifications share index searches (search_batcher.py), over the real demo index."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from whatart.retrieval_service.features.local_features import LocalFeatures
from whatart.retrieval_service.identify.search_batcher import SearchBatcher
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.layout import GalleryError
from whatart.retrieval_service.index.metadata import Artwork, MetadataFilter
from whatart.retrieval_service.index.publish import publish
from whatart.retrieval_service.triton.model_contract import ModelIdentity


@pytest.fixture()
def gallery(demo_index: Path) -> Iterator[Gallery]:
    """The demo index, loaded for one test and closed after it, whatever its outcome."""
    loaded = Gallery.load(demo_index)
    try:
        yield loaded
    finally:
        loaded.close()


def _batches() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("whatart_search_batch_queries_count") or 0.0
    total = REGISTRY.get_sample_value("whatart_search_batch_queries_sum") or 0.0
    return count, total


def test_waiting_queries_are_searched_together_and_each_gets_its_own_answer(gallery: Gallery) -> None:
    queries = [np.asarray(gallery.embeddings[i, :2], dtype=np.float32) for i in range(0, 100, 5)]  # 20 queries of 2 views
    ks = [1 + i % 7 for i in range(len(queries))]
    batcher = SearchBatcher(gallery, max_queries=8)
    before = _batches()

    async def all_at_once() -> list:
        return await asyncio.gather(*(batcher.search(q, k) for q, k in zip(queries, ks, strict=True)))

    together = asyncio.run(all_at_once())
    count, total = (after - start for after, start in zip(_batches(), before, strict=True))
    assert (count, total) == (3, 20), "20 waiting queries, at most 8 per search: 3 searches"
    for query, k, found in zip(queries, ks, together, strict=True):
        alone = gallery.search(query, k)
        assert [row for row, _ in found] == [row for _, _, row in alone] and len(found) == k
    assert together[0][0][0] == 0, "a stored artwork's own views find it first"


def test_a_failed_search_fails_its_waiting_queries_and_the_next_search_works(gallery: Gallery) -> None:
    good = np.asarray(gallery.embeddings[3, :1], dtype=np.float32)
    batcher = SearchBatcher(gallery)

    async def scenario() -> tuple[list, list]:
        failed = await asyncio.gather(batcher.search(good, 3), batcher.search(good[:, :10], 3), return_exceptions=True)
        return failed, await batcher.search(good, 3)

    failed, later = asyncio.run(scenario())
    assert all(isinstance(outcome, ValueError) for outcome in failed), failed
    assert later[0][0] == 3


def test_queries_with_different_filters_are_searched_apart_each_within_its_filter(gallery: Gallery) -> None:
    artworks = gallery.metadata.in_row_order()
    artist = artworks[10].artist
    only_artist = MetadataFilter(artist=artist)
    query = np.asarray(gallery.embeddings[10, :1], dtype=np.float32)
    other = np.asarray(gallery.embeddings[next(i for i, a in enumerate(artworks) if a.artist != artist), :1], dtype=np.float32)
    batcher = SearchBatcher(gallery)
    before = _batches()

    async def mixed() -> list:
        return await asyncio.gather(batcher.search(query, 5, only_artist), batcher.search(other, 5), batcher.search(other, 5, only_artist))

    filtered, unfiltered, other_filtered = asyncio.run(mixed())
    count, total = (after - start for after, start in zip(_batches(), before, strict=True))
    assert (count, total) == (2, 3), "the two queries with the same filter share a search"
    expected = {row for row, a in enumerate(artworks) if a.artist == artist}
    assert filtered[0][0] == 10 and {row for row, _ in filtered + other_filtered} <= expected
    assert len(other_filtered) == min(5, len(expected))
    assert unfiltered[0][0] not in expected, "without the filter the other artist's work comes first"


@pytest.fixture()
def three_view_gallery(tmp_path: Path) -> Iterator[Gallery]:
    """An exact gallery of 60 artworks with three views each (as `WHATART_GALLERY_BLURS=0,1.5,3` ingests)."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 3, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    artworks = [Artwork(id=f"a{i}") for i in range(60)]
    features = [LocalFeatures(np.empty((0, 2), np.float32), None) for _ in artworks]
    identity = ModelIdentity(name="synthetic", weights_sha256="0" * 64, preprocessing="none", dim=32, pooling="avg")
    publish(tmp_path, identity, artworks, vectors, features=features, features_description="none", gallery_blurs=(0.0, 1.5, 3.0),
            source="synthetic")
    loaded = Gallery.load(tmp_path)
    try:
        yield loaded
    finally:
        loaded.close()


def test_sharp_only_search_ranks_against_each_artworks_sharpest_view(three_view_gallery: Gallery) -> None:
    gallery = three_view_gallery
    query = np.asarray(gallery.embeddings[7, 2:3], dtype=np.float32)  # the most blurred view of artwork 7
    with pytest.raises(GalleryError, match="build_sharp_index"):
        gallery.search_many([query], 5, sharp_only=True)
    assert gallery.build_sharp_index(), "the index is exact"
    [found] = gallery.search_many([query], 5, sharp_only=True)
    sharp = np.asarray(gallery.embeddings[:, 0], dtype=np.float32)
    expected = np.argsort(-(sharp @ query[0]))[:5]
    assert [row for _, _, row in found] == expected.tolist()
    assert [score for _, score, _ in found] == pytest.approx((sharp @ query[0])[expected].tolist(), abs=1e-5)
