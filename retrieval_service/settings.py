"""Every tunable of whatart in one place.

Defaults suit one machine; each field can be overridden by an environment variable named
``WHATART_<FIELD>`` (e.g. ``WHATART_PORT=9090``) and, where the CLI offers one, by a flag.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.images import MAX_ASPECT_RATIO
from whatart.retrieval_service.index.milvus_store import MilvusConnection, MilvusTarget
from whatart.retrieval_service.index.vector_index import IndexPlan, plan_index
from whatart.retrieval_service.index.vector_store import BACKENDS, MILVUS
from whatart.retrieval_service.log_format import FORMATS

ENV_PREFIX = "WHATART_"
INDEX_KINDS = ("auto", "exact", "ivf")
IDENTIFY_MODES = ("cascade", "verified", "global")


def replica_urls(triton_url: str) -> tuple[str, ...]:
    """The Triton replicas a `triton_url` setting names (comma-separated), in order."""
    return tuple(url.strip() for url in triton_url.split(",") if url.strip())


class SettingsError(WhatartError, ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    # Logs: "text" for people, "json" (one object per line, with request ids) for log pipelines.
    log_format: str = "text"
    # Retrieval service (REST)
    host: str = "127.0.0.1"
    # When set, the REST routes under /v1 and the gRPC Identifier need
    # `Authorization: Bearer <token>` (access.py); clients send it from the same variable.
    api_token: str = dataclasses.field(default="", repr=False)
    port: int = 8080
    # gRPC API (grpc_api/whatart.proto), same host
    grpc_port: int = 50051
    index_dir: Path = Path(".whatart/index")
    # How often (seconds) the service looks for a newly published index version.
    reload_check_s: float = 2.0
    # Identifications in progress at once (REST and gRPC together); one more unary request
    # is refused with 429 / RESOURCE_EXHAUSTED and Retry-After (admission.py). Stream items
    # count but wait instead (a stream runs up to 16 at once): 32 leaves room for
    # interactive requests beside one batch job.
    max_pending: int = 32
    # ...of which IdentifyStream items may hold at most this many, all streams together,
    # taking turns (one item per stream in turn): unary callers always have the rest.
    max_stream_pending: int = 16
    default_k: int = 5
    max_k: int = 100
    max_upload_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    # Images longer than this many times their width (or wider than tall) are refused (400):
    # a painting's photo is not a 1-pixel strip, and every stage can handle up to this.
    max_image_aspect_ratio: float = MAX_ASPECT_RATIO
    # Pixels being decoded at once, all requests together: a decode that would exceed it
    # waits its turn (a small PNG can declare a 50-megapixel canvas: ~150 MB to decode).
    max_decoding_pixels: int = 100_000_000
    # Slow clients: a request's headers must arrive within the first, its body within the
    # second (seconds, from the end of its headers), or the connection is closed (408).
    request_header_timeout_s: float = 10.0
    request_body_timeout_s: float = 60.0
    # Triton: host:port of its gRPC endpoint, or a comma-separated list of replicas, over
    # which requests are spread (triton/encoder.py; docs/deployment.md).
    triton_url: str = "127.0.0.1:8001"
    # Triton's control and inference APIs need this key (triton/access_key.py); when unset,
    # `whatart triton` and every whatart client of Triton share the one in triton_api_key_file,
    # made on first use (mode 0600).
    triton_api_key: str = dataclasses.field(default="", repr=False)
    triton_api_key_file: Path = Path(".whatart/triton-api-key")
    triton_timeout_s: float = 30.0
    triton_wait_s: float = 120.0
    # A Triton that cannot be reached (restarting) is tried again after each wait; then the
    # request gets 503 + Retry-After. Bounded: 3.5 s in all by default.
    triton_retry_waits_s: tuple[float, ...] = (0.5, 1.0, 2.0)
    model_repository: Path = Path("model_repository")
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    # Ingestion: images per Triton request and requests in flight (dynamic batching fills
    # server-side batches from many small concurrent requests).
    ingest_batch_size: int = 4
    ingest_concurrency: int = 8
    # Encoded artworks are checkpointed this often, so a killed ingest resumes from there.
    ingest_checkpoint_every: int = 256
    # A new work at least this similar (cosine, sharp views) to another is reported as a
    # likely duplicate (ingest keeps both: merging is the curator's decision).
    duplicate_similarity: float = 0.97
    # Vector index (vector_index.py): "auto" picks exact search while it fits the memory
    # budget and has at most index_exact_max_vectors vectors, else a compressed IVF sized
    # to the budget; "exact" or "ivf" force one.
    index_kind: str = "auto"
    index_memory_mb: float = 1024.0
    index_exact_max_vectors: int = 300_000
    # Where ingest puts a new index's vectors (vector_store.py): "faiss" (in this process, a
    # file of the index) or "milvus" (a collection in the Milvus at milvus_uri, for galleries
    # that outgrow one machine). Readers follow what the index's manifest records.
    index_backend: str = "faiss"
    # Milvus: http://host:19530 for a server or cluster, or a file path ending in .db for
    # embedded milvus-lite. Readers default to the URI the index recorded at ingest.
    milvus_uri: str = ""
    milvus_token: str = dataclasses.field(default="", repr=False)
    # Index type of new collections: AUTOINDEX lets Milvus choose (HNSW, IVF_FLAT, ... also work).
    milvus_index_type: str = "AUTOINDEX"
    # How /v1/identify and gRPC answer. "cascade" (the product's choice): the plain photo's
    # embedding answers when its top match is certain, else the photo with its centre crops
    # does, else geometric verification of the shortlist decides (identify/identifier.py);
    # each early answer's thresholds are calibrated (`whatart evaluate --calibrate`).
    # For ablations: "verified" verifies every photo; "global" searches the plain photo only.
    identify_mode: str = "cascade"
    # "global" mode has no verification: the top match is "in the gallery" when its cosine
    # similarity reaches this (not calibrated: set it from `whatart evaluate` on your data).
    global_min_similarity: float = 0.9
    # Descriptors (each measured by `whatart evaluate`; defaults chosen from those runs:
    # docs/accuracy.md). Gallery side, fixed at ingest: blur levels (px at 224 px) each artwork is
    # indexed under: with SSCD, blurred copies found nothing the sharp view did not.
    gallery_blurs: tuple[float, ...] = (0.0,)
    # Query side: rotations (degrees) and centre crops (linear fraction kept) of the photo.
    # With SSCD, rotations of the whole photo added nothing at 2x the encoder work; the crops
    # find a painting hung with wall around it.
    query_rotations: tuple[float, ...] = (0.0,)
    query_crops: tuple[float, ...] = (0.8, 0.6)
    # Geometric verification (ORB + MAGSAC++) of this many shortlisted artworks; 0 ranks by
    # global similarity alone (the top match is still verified for the confidence). 30 and 80
    # measured the same top-1 and open-set figures as 50 and 200, at 0.6x the 10^6-work p99 (docs/performance.md).
    rerank_candidates: int = 30
    # ...and, when none of those verifies, candidates down to this rank get a second chance.
    rerank_extended: int = 80
    # Verified candidates with at least this many inliers go first, most inliers first;
    # separate from the calibrated "in the gallery" threshold, which is set for the open set
    # and can be higher than what tells the painting apart within a shortlist. With SSCD's
    # ranking, 10-16 spurious inliers on a dissimilar work outranked the right one: 20 measured best.
    rerank_min_inliers: int = 20
    # A photo with fewer ORB keypoints than this (a blurred colour field) has nothing to
    # verify with: when nothing verifies, its shortlist is re-ranked by colour (features/colour.py).
    # 0 (the default: SSCD's own ranking of such photos was right more often) turns this off.
    colour_rerank_below: int = 0
    # Used until `whatart evaluate --protocol open-set --calibrate` stores a measured one.
    default_min_inliers: int = 20
    # ...and the cascade's early answers until then: the top match's cosine similarity and
    # its lead over the runner-up that let the embedding stages answer without verifying, and
    # the confidence given with such an answer. The stricter of the two stages' thresholds
    # `--calibrate` fitted on the 15,210-work benchmark gallery (3,000 queries: seed, photo and
    # open-set), where the embedding stage's looser ones were right 99.55 % of the time (docs/accuracy.md).
    default_early_similarity: float = 0.40
    default_early_margin: float = 0.14
    default_early_confidence: float = 0.995
    # Clients
    server_url: str = "http://127.0.0.1:8080"
    ui_host: str = "127.0.0.1"
    ui_port: int = 7860

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults overridden by ``WHATART_*`` variables, each validated."""
        environ = os.environ if environ is None else environ
        values = {}
        for field in dataclasses.fields(cls):
            name = ENV_PREFIX + field.name.upper()
            if name in environ:
                values[field.name] = _parse(name, environ[name], field.type)
        return cls(**values).validated()

    def validated(self) -> Settings:
        positive = ["port", "grpc_port", "reload_check_s", "max_pending", "max_stream_pending", "default_k", "max_k", "max_upload_bytes",
                    "max_image_pixels", "max_decoding_pixels", "request_header_timeout_s", "request_body_timeout_s",
                    "triton_timeout_s", "ingest_batch_size", "ingest_concurrency", "ingest_checkpoint_every", "ui_port",
                    "index_memory_mb", "index_exact_max_vectors"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not self.gallery_blurs or not (self.query_rotations or self.query_crops):
            raise SettingsError("gallery_blurs and query_rotations/query_crops need at least one view each")
        if any(not 0 < fraction <= 1 for fraction in self.query_crops):
            raise SettingsError(f"query_crops must be fractions in (0, 1], got {self.query_crops}")
        counts = ("rerank_candidates", "rerank_extended", "rerank_min_inliers", "colour_rerank_below")
        if any(getattr(self, name) < 0 for name in counts):
            raise SettingsError(f"{', '.join(counts)} must be 0 or more, got {[getattr(self, n) for n in counts]}")
        if any(wait < 0 for wait in self.triton_retry_waits_s):
            raise SettingsError(f"triton_retry_waits_s must be 0 or more seconds each, got {self.triton_retry_waits_s}")
        if self.index_kind not in INDEX_KINDS:
            raise SettingsError(f"index_kind must be one of {', '.join(INDEX_KINDS)}, got {self.index_kind!r}")
        if self.log_format not in FORMATS:
            raise SettingsError(f"log_format must be one of {', '.join(FORMATS)}, got {self.log_format!r}")
        if self.index_backend not in BACKENDS:
            raise SettingsError(f"index_backend must be one of {', '.join(BACKENDS)}, got {self.index_backend!r}")
        if self.index_backend == MILVUS and not self.milvus_uri:
            raise SettingsError("index_backend milvus needs WHATART_MILVUS_URI (http://host:19530, or a milvus-lite file ending in .db)")
        if not replica_urls(self.triton_url):
            raise SettingsError(f"triton_url must name at least one host:port, got {self.triton_url!r}")
        if self.identify_mode not in IDENTIFY_MODES:
            raise SettingsError(f"identify_mode must be one of {', '.join(IDENTIFY_MODES)}, got {self.identify_mode!r}")
        if not -1 <= self.global_min_similarity <= 1:
            raise SettingsError(f"global_min_similarity must be a cosine similarity in [-1, 1], got {self.global_min_similarity}")
        if not 0 <= self.default_early_confidence <= 1:
            raise SettingsError(f"default_early_confidence must be a probability in [0, 1], got {self.default_early_confidence}")
        if not (-1 <= self.default_early_similarity <= 1 and 0 <= self.default_early_margin <= 2):
            raise SettingsError(f"default_early_similarity must be in [-1, 1] and default_early_margin in [0, 2], got "
                                f"{self.default_early_similarity} and {self.default_early_margin}")
        if not 0 < self.duplicate_similarity <= 1:
            raise SettingsError(f"duplicate_similarity must be in (0, 1], got {self.duplicate_similarity}")
        if self.max_stream_pending > self.max_pending:
            raise SettingsError(f"max_stream_pending ({self.max_stream_pending}) exceeds max_pending ({self.max_pending})")
        if self.max_decoding_pixels < self.max_image_pixels:
            raise SettingsError(f"max_decoding_pixels ({self.max_decoding_pixels:,}) is below max_image_pixels "
                                f"({self.max_image_pixels:,}): the largest accepted image could never be decoded")
        if self.max_image_aspect_ratio < 1:
            raise SettingsError(f"max_image_aspect_ratio must be at least 1, got {self.max_image_aspect_ratio}")
        if self.default_k > self.max_k:
            raise SettingsError(f"default_k ({self.default_k}) exceeds max_k ({self.max_k})")
        return self

    def milvus_connection(self) -> MilvusConnection | None:
        """How to reach Milvus when one is configured (else readers use the index's recorded URI)."""
        return MilvusConnection(self.milvus_uri, self.milvus_token) if self.milvus_uri else None

    def milvus_target(self) -> MilvusTarget | None:
        """Where ingest writes new vectors when the backend is Milvus; None for FAISS."""
        connection = self.milvus_connection()
        return MilvusTarget(connection, self.milvus_index_type) if self.index_backend == MILVUS and connection else None

    def index_plan(self, n_vectors: int, dim: int) -> IndexPlan:
        return plan_index(n_vectors, dim, self.index_memory_mb, self.index_exact_max_vectors, self.index_kind)

    def override(self, **changes: object) -> Settings:
        """A copy with the CLI flags that were given (None means 'not given')."""
        given = {key: value for key, value in changes.items() if value is not None}
        return dataclasses.replace(self, **given).validated()


def _parse(name: str, raw: str, type_name: object) -> object:
    if str(type_name) == "tuple[float, ...]":
        try:
            return tuple(float(part) for part in raw.split(",") if part.strip())
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a comma-separated list of numbers") from None
    kind = {"int": int, "float": float, "Path": Path, "str": str}[str(type_name)]
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
