"""Gallery vectors in Milvus (pymilvus): a server, a cluster, or embedded milvus-lite.

Each gallery version gets its own collection, written completely before the version is
published and dropped when the version is pruned, so a reader never sees a half-written
gallery (the same guarantee as the FAISS file beside the other files). A collection holds
one row per gallery view: the view's embedding, its artwork's row id, and the metadata
fields a search can be filtered on (metadata.FILTER_FIELDS), so Milvus filters before it
ranks. The URI says which Milvus: ``http://host:19530`` for a server or cluster, a file path
ending in ``.db`` for milvus-lite (embedded; used by the tests).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from whatart.retrieval_service.errors import DependencyUnavailable, WhatartError
from whatart.retrieval_service.index.metadata import FILTER_FIELDS, Artwork, MetadataFilter

if TYPE_CHECKING:
    from pymilvus import MilvusClient

log = logging.getLogger(__name__)

VECTOR_FIELD = "embedding"
ARTWORK_FIELD = "artwork"
MAX_TEXT = 65_535
"""Milvus's longest VARCHAR (bytes)"""
INSERT_ROWS = 2_000
"""Rows per insert: 2,000 x 2048-d float32 is 16 MB, well inside gRPC's 64 MB message limit."""
MAX_DEPTH = 16_384
"""Milvus's largest top-k per search."""
COLLECTION_PREFIX = "whatart_"
LITERAL_ESCAPES = {"\\": "\\\\", '"': '\\"'}


class MilvusError(WhatartError):
    """Milvus cannot be reached, or refused an operation; the message says which and where."""


class MilvusCollectionMissing(MilvusError):
    """The collection an index recorded is gone from Milvus: only a new ingest brings it back."""


class MilvusUnavailable(MilvusError, DependencyUnavailable):
    """A search failed while serving: the service answers 503 and stays up."""

    part = "the vector store (Milvus)"


@dataclass(frozen=True)
class MilvusConnection:
    uri: str
    token: str = ""

    def client(self) -> MilvusClient:
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise MilvusError("the Milvus backend needs pymilvus: pip install 'whatart[milvus]'") from None
        try:
            return MilvusClient(uri=self.uri, token=self.token)
        except Exception as error:  # pymilvus raises its own and grpc's exception types
            raise MilvusError(f"cannot connect to Milvus at {self.uri} ({error}): check that it runs there, or point "
                              "WHATART_MILVUS_URI (and WHATART_MILVUS_TOKEN) at it") from None


@dataclass(frozen=True)
class MilvusTarget:
    """Where `publish.publish` writes a version's vectors when the backend is Milvus."""

    connection: MilvusConnection
    index_type: str = "AUTOINDEX"


def collection_name(stamp: str) -> str:
    """A valid collection name (letters, digits, underscores) for a gallery version's stamp."""
    return COLLECTION_PREFIX + re.sub(r"\W", "_", stamp)


def write_collection(connection: MilvusConnection, name: str, vectors: np.ndarray, artworks: list[Artwork], index_type: str) -> float:
    """Create collection `name` holding `vectors` [artworks, views, dim] with their artworks'
    row ids and filter fields, indexed (`index_type`, inner product) and loaded; returns seconds."""
    started = time.perf_counter()
    n_artworks, views, dim = vectors.shape
    client = connection.client()  # first: it names a missing pymilvus
    from pymilvus import DataType

    try:
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("vector_id", DataType.INT64, is_primary=True)
        schema.add_field(ARTWORK_FIELD, DataType.INT64)
        for field in FILTER_FIELDS:
            schema.add_field(field, DataType.VARCHAR, max_length=MAX_TEXT)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        index = client.prepare_index_params()
        index.add_index(VECTOR_FIELD, index_type=index_type, metric_type="IP")
        client.create_collection(name, schema=schema, index_params=index)
        flat = vectors.reshape(-1, dim)
        for start in range(0, len(flat), INSERT_ROWS):
            rows = range(start, min(start + INSERT_ROWS, len(flat)))
            client.insert(name, [
                {"vector_id": row, ARTWORK_FIELD: row // views, VECTOR_FIELD: np.asarray(flat[row], dtype=np.float32),
                 **{field: _fitting(getattr(artworks[row // views], field)) for field in FILTER_FIELDS}}
                for row in rows
            ])
        client.flush(name)
        client.load_collection(name)
    except Exception as error:
        raise MilvusError(f"Milvus at {connection.uri} failed to write collection {name}: {error}") from None
    finally:
        client.close()
    seconds = time.perf_counter() - started
    log.info("Milvus: wrote %d vectors (%d artworks x %d views) into %s at %s in %.1f s", n_artworks * views, n_artworks, views, name,
             connection.uri, seconds)
    return seconds


def _fitting(text: str) -> str:
    """`text` cut to Milvus's VARCHAR limit (a filter on a longer value cannot match it exactly)."""
    encoded = text.encode()
    return text if len(encoded) <= MAX_TEXT else encoded[:MAX_TEXT].decode(errors="ignore")


def drop_collection(connection: MilvusConnection, name: str) -> None:
    client = connection.client()
    try:
        if client.has_collection(name):
            client.drop_collection(name)
    finally:
        client.close()


def filter_expression(where: MetadataFilter) -> str:
    """A Milvus boolean expression requiring each given field to equal its value."""
    return " and ".join(f"{field} == {_literal(value)}" for field, value in where.conditions().items())


def _literal(value: str) -> str:
    """A Milvus string literal (milvus-lite has no filter templates to pass values apart)."""
    if any(ord(char) < 32 for char in value):  # MetadataFilter.validated refuses them before this
        raise ValueError(f"filter value {value!r} contains control characters")
    return '"' + "".join(LITERAL_ESCAPES.get(char, char) for char in value) + '"'


class MilvusStore:
    """A gallery version's collection, loaded for search."""

    def __init__(self, connection: MilvusConnection, name: str, views: int) -> None:
        self.connection = connection
        self.name = name
        self.views = views
        self.description = f"Milvus collection {name} at {connection.uri}"
        self._client = connection.client()
        try:
            if not self._client.has_collection(name):
                raise MilvusCollectionMissing(
                    f"Milvus at {connection.uri} has no collection {name}: re-run `whatart ingest` for this index")
            self._client.load_collection(name)
            self._size = int(self._client.get_collection_stats(name)["row_count"])
        except MilvusError:
            self._client.close()
            raise
        except Exception as error:
            self._client.close()
            raise MilvusError(f"Milvus at {connection.uri} cannot load collection {name}: {error}") from None

    def __len__(self) -> int:
        return self._size

    def search(self, queries: np.ndarray, depth: int, where: MetadataFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
        depth = min(depth, MAX_DEPTH)
        scores = np.full((len(queries), depth), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), depth), -1, dtype=np.int64)
        try:
            hits = self._client.search(
                self.name, data=np.asarray(queries, dtype=np.float32), limit=depth, anns_field=VECTOR_FIELD,
                filter=filter_expression(where) if where is not None else "", output_fields=[ARTWORK_FIELD],
                search_params={"metric_type": "IP"},
            )
        except Exception as error:
            raise MilvusUnavailable(f"Milvus at {self.connection.uri} failed to search {self.name}: {error}") from None
        for row, found in enumerate(hits):
            for column, hit in enumerate(found):
                scores[row, column] = hit["distance"]
                ids[row, column] = hit["entity"][ARTWORK_FIELD]
        return scores, ids

    def close(self) -> None:
        self._client.close()
