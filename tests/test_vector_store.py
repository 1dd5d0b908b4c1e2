"""The index interface's results contract, run unchanged against every backend: FAISS exact,
FAISS's two-stage IVF, and Milvus (embedded milvus-lite, a real Milvus engine in-process;
the same pymilvus calls reach a Milvus server or cluster)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest
from whatart.retrieval_service.index import milvus_store, vector_index
from whatart.retrieval_service.index.metadata import Artwork, MetadataFilter
from whatart.retrieval_service.index.milvus_store import MilvusConnection, MilvusStore
from whatart.retrieval_service.index.vector_index import EXACT, IVF, IndexPlan
from whatart.retrieval_service.index.vector_store import FaissStore, VectorStore, best_per_artwork

ARTWORKS = 600
VIEWS = 2
DIM = 64
GENRES = ("portrait", "landscape", "still life")
QUOTED_ARTIST = 'Georgia "O\'Keeffe" \\ test'
"""quotes and a backslash: a filter value must never be read as expression syntax"""


def _vectors() -> np.ndarray:
    """[artworks, views, dim] unit vectors; an artwork's views are close to each other."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal((ARTWORKS, 1, DIM)).astype(np.float32)
    views = base + 0.3 * rng.standard_normal((ARTWORKS, VIEWS, DIM)).astype(np.float32)
    return views / np.linalg.norm(views, axis=2, keepdims=True)


def _artworks() -> list[Artwork]:
    return [Artwork(f"a{row}", artist=QUOTED_ARTIST if row % 10 == 0 else f"artist {row % 7}", title=f"work {row}",
                    genre=GENRES[row % 3]) for row in range(ARTWORKS)]


VECTORS = _vectors()
ARTWORK_LIST = _artworks()


def _rows_matching(where: MetadataFilter) -> list[int]:
    return [row for row, artwork in enumerate(ARTWORK_LIST) if where.matches(artwork)]


def _faiss(plan: IndexPlan) -> FaissStore:
    ids = np.repeat(np.arange(ARTWORKS), VIEWS)
    index = vector_index.build_index(VECTORS.reshape(-1, DIM), ids, plan)
    return FaissStore(index, VIEWS, plan.factory, _rows_matching)


@pytest.fixture(scope="module", params=["faiss-exact", "faiss-ivf", "milvus-lite"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorStore]:
    if request.param == "faiss-exact":
        yield _faiss(IndexPlan(EXACT, DIM))
    elif request.param == "faiss-ivf":
        yield _faiss(IndexPlan(IVF, DIM, reduced_dim=64, lists=16, probes=16))
    else:
        connection = MilvusConnection(str(tmp_path_factory.mktemp("milvus") / "milvus.db"))
        milvus_store.write_collection(connection, "whatart_contract", VECTORS, ARTWORK_LIST, "AUTOINDEX")
        opened = MilvusStore(connection, "whatart_contract", VIEWS)
        yield opened
        opened.close()


def _exact_best(query: np.ndarray, rows: list[int]) -> list[int]:
    """Brute force: `rows` ordered by their best similarity to any of the query's views."""
    best = np.einsum("qd,rvd->rqv", query, VECTORS[rows]).reshape(len(rows), -1).max(axis=1)
    return [rows[i] for i in np.argsort(-best, kind="stable")]


def test_the_store_holds_every_view(store: VectorStore) -> None:
    assert len(store) == ARTWORKS * VIEWS and store.views == VIEWS


def test_each_artworks_own_view_finds_it_first_with_its_similarity(store: VectorStore) -> None:
    rows = list(range(0, ARTWORKS, 37))
    ranked = best_per_artwork(store, [VECTORS[row, 1:2] for row in rows], k=5)
    for row, found in zip(rows, ranked, strict=True):
        assert found[0][0] == row and found[0][1] == pytest.approx(1.0, abs=0.01)
        assert len(found) == 5 and len({r for r, _ in found}) == 5, "k distinct artworks"
        scores = [score for _, score in found]
        assert scores == sorted(scores, reverse=True) and all(-1.01 <= s <= 1.01 for s in scores)


def test_scores_are_each_artworks_cosine_similarity_and_the_best_is_exacts(store: VectorStore) -> None:
    query = np.random.default_rng(3).standard_normal((2, DIM)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    [found] = best_per_artwork(store, [query], k=3)
    assert found[0][0] == _exact_best(query, list(range(ARTWORKS)))[0]
    for row, score in found:  # approximate backends may order near-ties differently, never misstate a score
        assert score == pytest.approx(float(np.einsum("qd,vd->qv", query, VECTORS[row]).max()), abs=0.02)


def test_queries_searched_together_get_what_each_gets_alone(store: VectorStore) -> None:
    queries = [VECTORS[row, :views] + 0.1 for row, views in ((5, 1), (77, 2), (300, 1))]
    together = best_per_artwork(store, queries, k=4)
    alone = [best_per_artwork(store, [query], k=4)[0] for query in queries]
    assert [[row for row, _ in r] for r in together] == [[row for row, _ in r] for r in alone]


@pytest.mark.parametrize("where", [MetadataFilter(genre="landscape"), MetadataFilter(artist="artist 3", genre="portrait"),
                                   MetadataFilter(artist=QUOTED_ARTIST)], ids=["genre", "artist-and-genre", "quoted-artist"])
def test_a_filter_ranks_only_the_artworks_it_keeps(store: VectorStore, where: MetadataFilter) -> None:
    kept = _rows_matching(where)
    outside = next(row for row in range(ARTWORKS) if row not in kept)
    inside = kept[len(kept) // 2]
    [from_outside, from_inside] = best_per_artwork(store, [VECTORS[outside, :1], VECTORS[inside, :1]], k=5, where=where)
    assert {row for row, _ in from_outside + from_inside} <= set(kept)
    assert from_inside[0][0] == inside, "a kept artwork's own view still finds it first"
    assert [row for row, _ in from_outside][:1] == _exact_best(VECTORS[outside, :1], kept)[:1], \
        "filtered before ranking: the best kept artwork, not what survives a cut of the unfiltered list"
    assert len(from_outside) == min(5, len(kept))


def test_a_filter_nothing_passes_finds_nothing(store: VectorStore) -> None:
    assert best_per_artwork(store, [VECTORS[0, :1]], k=5, where=MetadataFilter(genre="no such genre")) == [[]]


def test_a_filter_value_with_control_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="control characters"):
        milvus_store.filter_expression(MetadataFilter(artist="a\x00b"))


def test_an_unreachable_milvus_is_named_in_one_line() -> None:
    with pytest.raises(milvus_store.MilvusError, match=re.escape("cannot connect to Milvus at http://127.0.0.1:9 (")) as refused:
        MilvusConnection("http://127.0.0.1:9").client()
    assert "\n" not in str(refused.value) and "WHATART_MILVUS_URI" in str(refused.value), "one line that says what to set"
