"""The REST API: /health, /v1/identify, /v1/artworks (search), /v1/artworks/{id}[/image], /metrics;
its lifespan also runs the gRPC API (grpc_api) on the same Identifier."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import make_asgi_app
from whatart.retrieval_service import metrics
from whatart.retrieval_service.errors import DependencyUnavailable
from whatart.retrieval_service.identify.identifier import Identifier
from whatart.retrieval_service.images import ImageError
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.metadata import MAX_RESULTS, Artwork, ArtworkQuery, FilterError, MetadataFilter
from whatart.retrieval_service.log_format import REQUEST_ID, safe_request_id
from whatart.retrieval_service.serving.access import authorised, protected_rest_path, refusal
from whatart.retrieval_service.serving.admission import RETRY_AFTER_S as BUSY_RETRY_AFTER_S
from whatart.retrieval_service.serving.admission import Admission, Overloaded
from whatart.retrieval_service.serving.grpc_api import GrpcServer
from whatart.retrieval_service.serving.observed import identify_observed
from whatart.retrieval_service.serving.reloader import GalleryReloader
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.encoder import ServedModel, TritonEncoder

log = logging.getLogger(__name__)

UNAVAILABLE_RETRY_AFTER_S = "5"
MULTIPART_OVERHEAD_BYTES = 64 * 1024
"""What a body may hold beyond the image: the form's boundaries, headers and small fields."""
YEARS = (-100_000, 10_000)
"""The years /v1/artworks accepts (every integer must fit SQLite's 64 bits; these fit art)."""
MAX_OFFSET = 1_000_000_000
SHOWN_INPUT_CHARS = 20
"""How much of an invalid parameter an error message repeats."""


def create_app(settings: Settings, gallery: Gallery, served: ServedModel) -> FastAPI:
    """The app for an already verified gallery and model (see `server.prepare`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # gRPC aio channels belong to the event loop that creates them: make it here.
        encoder = TritonEncoder.from_settings(settings, served.model_name)
        app.state.galleries = GalleryReloader(
            Identifier(gallery, encoder, served, settings), settings.index_dir, settings.reload_check_s)
        metrics.serving(len(gallery), len(gallery.vectors))
        grpc_server = await GrpcServer.start(app.state.galleries.current, admission, settings)
        try:
            yield
        finally:
            await grpc_server.stop()
            await encoder.close()

    admission = Admission(settings.max_pending, settings.max_stream_pending)
    app = FastAPI(title="whatart", version="0.1.0", lifespan=lifespan)
    app.mount("/metrics", make_asgi_app())

    def _too_large(body: str) -> JSONResponse:
        """One answer for a body declared (Content-Length) or found (while streaming) too large."""
        return _error(413, f"{body} exceeds the limit of {settings.max_upload_bytes:,} bytes for the image "
                           f"(+ {MULTIPART_OVERHEAD_BYTES // 1024} KiB for the form)", {"Connection": "close"})

    @app.middleware("http")
    async def request_id_and_limits(request: Request, call_next):
        request_id = safe_request_id(request.headers.get("x-request-id"))
        REQUEST_ID.set(request_id)
        length = request.headers.get("content-length")
        authorisation = request.headers.get("authorization")
        if protected_rest_path(request.url.path) and not authorised(authorisation, settings.api_token):
            response = _error(401, refusal(authorisation), {"WWW-Authenticate": "Bearer"})
        elif length and length.isascii() and length.isdigit() and int(length) > settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES:
            response = _too_large(f"the request body ({int(length):,} bytes)")
        else:
            response = await call_next(request)
        response.headers["x-request-id"] = request_id
        return response

    @app.exception_handler(413)
    async def too_large(request: Request, error: Exception) -> JSONResponse:
        return _too_large("the request body")

    @app.exception_handler(ImageError)
    async def image_error(request: Request, error: ImageError) -> JSONResponse:
        return _error(400, str(error))

    @app.exception_handler(FilterError)
    async def filter_error(request: Request, error: FilterError) -> JSONResponse:
        return _error(400, str(error))

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, error: Overloaded) -> JSONResponse:
        return _error(429, str(error), {"Retry-After": str(BUSY_RETRY_AFTER_S)})

    @app.exception_handler(DependencyUnavailable)
    async def dependency_unavailable(request: Request, error: DependencyUnavailable) -> JSONResponse:
        log.warning("%s", error)
        return _error(503, error.public_message, {"Retry-After": UNAVAILABLE_RETRY_AFTER_S})

    async def current(request: Request) -> Identifier:
        return await request.app.state.galleries.current()

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        identifier = await current(request)
        replicas = await identifier.encoder.readiness()
        triton_ready = any(replicas.values())
        body = {
            "status": "ok" if triton_ready else "unavailable",
            "triton": "ready" if triton_ready else f"not ready at {settings.triton_url}",
            "triton_replicas": {url: "ready" if ready else "not ready" for url, ready in replicas.items()},
            "model": served.identity.name,
            "artworks": len(identifier.gallery),
        }
        return JSONResponse(body, status_code=200 if triton_ready else 503)

    # max_body_size: FastAPI counts the body while it streams in (chunked too) and stops at the
    # limit (413, too_large above), before the multipart parser spools more of it to disk.
    # No other route reads a body; a declared length over the limit is refused for all (above).
    @app.post("/v1/identify", max_body_size=settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES)
    async def identify(
        request: Request,
        image: Annotated[UploadFile | None, File(description="JPEG, PNG, WebP, GIF (first frame), TIFF, BMP or HEIC")] = None,
        k_form: Annotated[str | None, Form(alias="k")] = None,
        k_query: Annotated[str | None, Query(alias="k")] = None,
        artist: Annotated[str | None, Form(description="identify among this artist's works only")] = None,
        genre: Annotated[str | None, Form(description="... this genre's only")] = None,
        style: Annotated[str | None, Form(description="... this style's only")] = None,
        explain: Annotated[bool, Form(description="each painting's top match with the correspondences that verified it")] = False,
    ) -> JSONResponse:
        identifier = await current(request)
        k = _parse_k(k_form if k_form is not None else k_query, settings)
        where = MetadataFilter.of(artist=artist, genre=genre, style=style)
        if image is None:
            raise HTTPException(400, "send the image as the multipart form field 'image'")
        data = await image.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:  # answered here: the 413 handler above speaks of the whole body
            return _error(413, f"the image exceeds the limit of {settings.max_upload_bytes:,} bytes")
        with admission.admitted():
            result = await identify_observed(identifier, data, k, "rest", where, explain)
        return JSONResponse(result.to_json(explain))

    async def find_artwork(request: Request, artwork_id: str) -> Artwork:
        found = (await current(request)).gallery.metadata.by_id(artwork_id)
        if found is None:
            raise HTTPException(404, f"no artwork with id {artwork_id!r} in the gallery")
        return found

    @app.get("/v1/artworks")
    async def search_artworks(
        request: Request,
        q: Annotated[str, Query(max_length=200, description="words of the artist or title (prefixes)")] = "",
        artist: str | None = None,
        style: str | None = None,
        genre: str | None = None,
        year_from: Annotated[int | None, Query(ge=YEARS[0], le=YEARS[1])] = None,
        year_to: Annotated[int | None, Query(ge=YEARS[0], le=YEARS[1])] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 20,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> JSONResponse:
        MetadataFilter.of(artist=artist, genre=genre, style=style)  # the same checks as identify's filters
        query = ArtworkQuery(q, artist, style, genre, year_from, year_to, limit, offset)
        total, found = (await current(request)).gallery.metadata.search(query)
        return JSONResponse({"total": total, "limit": limit, "offset": offset, "artworks": [a.public() for a in found]})

    @app.get("/v1/artworks/{artwork_id}")
    async def artwork(request: Request, artwork_id: str) -> JSONResponse:
        return JSONResponse((await find_artwork(request, artwork_id)).public())

    @app.get("/v1/artworks/{artwork_id}/image")
    async def artwork_image(request: Request, artwork_id: str) -> FileResponse:
        # Only paths recorded at ingest are served: a request cannot name a file.
        path = Path((await find_artwork(request, artwork_id)).image_path)
        if not path.is_file():
            raise HTTPException(404, f"the image of {artwork_id!r} is no longer at its ingest location")
        return FileResponse(path)

    return app


def _parse_k(raw: str | None, settings: Settings) -> int:
    """k from a form or query string: ASCII digits only (Python's int() would also take
    "5_0", " 5" and other scripts' digits)."""
    if raw is None or raw == "":
        return settings.default_k
    if not (raw.isascii() and raw.isdigit()):
        shown = raw[:SHOWN_INPUT_CHARS] + ("…" if len(raw) > SHOWN_INPUT_CHARS else "")
        raise HTTPException(422, f"k must be an integer between 1 and {settings.max_k}, got {shown!r}")
    if len(raw) > len(str(settings.max_k)) or not 1 <= int(raw) <= settings.max_k:
        raise HTTPException(422, f"k must be between 1 and {settings.max_k}, got {raw[:SHOWN_INPUT_CHARS]}")
    return int(raw)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)
