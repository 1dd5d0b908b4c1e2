"""Metadata search on a real SQLite file: full text over artist and title, filters, years."""

from __future__ import annotations

from pathlib import Path

import pytest
from whatart.retrieval_service.index.metadata import (
    Artwork,
    ArtworkQuery,
    FilterError,
    MetadataFilter,
    MetadataStore,
    write_metadata,
    year_of,
)

ARTWORKS = [
    Artwork("a1", "Claude Monet", "Impression, soleil levant", "landscape", "Impressionism", "1872"),
    Artwork("a2", "Claude Monet", "Water Lilies", "landscape", "Impressionism", "c. 1915-1926"),
    Artwork("a3", "Édouard Manet", "Le Déjeuner sur l'herbe", "genre painting", "Realism", "1863"),
    Artwork("a4", "Pieter Bruegel the Elder", "The Harvesters", "genre painting", "Northern Renaissance", "1565"),
    Artwork("a5", "Unknown", 'Untitled ("quoted") OR NEAR(*)', "abstract", "Minimalism", ""),
]


@pytest.fixture()
def store(tmp_path: Path) -> MetadataStore:
    write_metadata(tmp_path / "metadata.sqlite", ARTWORKS)
    return MetadataStore(tmp_path / "metadata.sqlite")


def _ids(store: MetadataStore, **criteria: object) -> list[str]:
    return [a.id for a in store.search(ArtworkQuery(**criteria))[1]]


def test_years_come_from_free_text_dates() -> None:
    assert [year_of(d) for d in ("1872", "c. 1915-1926", "ca. 800 AD", "19th century", "")] == [1872, 1915, 800, None, None]


def test_text_matches_word_prefixes_of_artist_and_title_ignoring_case_and_accents(store: MetadataStore) -> None:
    assert _ids(store, text="monet") == ["a1", "a2"]
    assert _ids(store, text="claude lil") == ["a2"]
    assert _ids(store, text="edouard dejeuner") == ["a3"]
    assert _ids(store, text="harvest") == ["a4"]
    assert _ids(store, text="rembrandt") == []


def test_filters_and_year_ranges_combine(store: MetadataStore) -> None:
    assert _ids(store, artist="Claude Monet", year_from=1900) == ["a2"]
    assert _ids(store, genre="genre painting", year_to=1700) == ["a4"]
    assert _ids(store, style="Impressionism", text="soleil") == ["a1"]
    assert _ids(store, year_from=1500, year_to=2000) == ["a1", "a2", "a3", "a4"], "no year: outside every range"


def test_pages_and_totals(store: MetadataStore) -> None:
    total, page = store.search(ArtworkQuery(limit=2, offset=2))
    assert total == 5 and [a.id for a in page] == ["a3", "a4"]


def test_query_syntax_in_user_text_is_just_words(store: MetadataStore) -> None:
    assert _ids(store, text='"quoted") OR NEAR(*') == ["a5"]
    assert _ids(store, text="*** ()") == ["a1", "a2", "a3", "a4", "a5"], "no words: no text condition"


def test_a_filter_of_no_fields_is_no_filter_and_bad_values_are_named() -> None:
    # REST's absent form fields, gRPC's unset filter and the CLI's absent flags all mean None,
    # so unfiltered requests from every API share index searches (search_batcher.py)
    assert MetadataFilter.of(artist=None, genre=None, style=None) is None
    assert MetadataFilter.of(genre="portrait") == MetadataFilter(genre="portrait")
    with pytest.raises(FilterError, match="the style filter is empty"):
        MetadataFilter.of(style="  ")
