"""`whatart serve`: verify the gallery against the served model, then run the REST API."""

from __future__ import annotations

import asyncio
import logging
import time

import uvicorn
from whatart.retrieval_service.identify.identifier import check_compatible
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.serving.api import create_app
from whatart.retrieval_service.serving.body_deadline import BodyDeadline
from whatart.retrieval_service.serving.http_timeouts import with_header_timeout
from whatart.retrieval_service.serving.memory import return_large_buffers
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.access_key import triton_api_key
from whatart.retrieval_service.triton.encoder import EncoderUnavailable, ServedModel, TritonEncoder, served_as

log = logging.getLogger(__name__)


async def _wait_until_ready(encoder: TritonEncoder, deadline: float, settings: Settings) -> None:
    while not await encoder.is_ready():
        if time.monotonic() > deadline:
            raise EncoderUnavailable(
                f"Triton at {settings.triton_url} did not serve model {encoder.model_name!r} within "
                f"{settings.triton_wait_s:.0f} s: start it with `whatart triton` (or check its log)"
            )
        await asyncio.sleep(0.5)


async def wait_for_model(settings: Settings, encoder_name: str) -> ServedModel:
    """Wait (up to triton_wait_s) for Triton to serve the encoder (through its ensemble with
    heads where that is served), then describe it."""
    deadline = time.monotonic() + settings.triton_wait_s
    api_key = triton_api_key(settings)
    probe = TritonEncoder(settings.triton_url, encoder_name, settings.triton_timeout_s, api_key=api_key)
    try:
        await _wait_until_ready(probe, deadline, settings)
    finally:
        await probe.close()
    model_name = await served_as(settings.triton_url, encoder_name, api_key)
    encoder = TritonEncoder(settings.triton_url, model_name, settings.triton_timeout_s, api_key=api_key)
    try:
        await _wait_until_ready(encoder, deadline, settings)
        return await encoder.served_model()
    finally:
        await encoder.close()


def prepare(settings: Settings) -> tuple[Gallery, ServedModel]:
    """Load and verify everything before the server binds its port, so that a bad index or
    a mismatched model stops `serve` with one clear message instead of a half-working API."""
    started = time.perf_counter()
    gallery = Gallery.load(settings.index_dir, settings.milvus_connection())
    served = asyncio.run(wait_for_model(settings, gallery.manifest.model.name))
    check_compatible(gallery, served, str(settings.index_dir))
    log.info(
        "gallery %s: %d artworks, model %s (dim %d) through %s; ready in %.2f s",
        gallery.directory, len(gallery), served.identity.name, served.identity.dim, served.model_name, time.perf_counter() - started,
    )
    return gallery, served


def serve(settings: Settings) -> None:
    return_large_buffers()
    gallery, served = prepare(settings)
    app = create_app(settings, gallery, served)
    log.info("serving on http://%s:%d", settings.host, settings.port)
    uvicorn.run(BodyDeadline(app, settings.request_body_timeout_s), host=settings.host, port=settings.port, log_level="warning",
                http=with_header_timeout(settings.request_header_timeout_s))
