"""One identification as both APIs run it: counted by outcome, timed per stage, logged."""

from __future__ import annotations

import logging

from whatart.retrieval_service import metrics
from whatart.retrieval_service.encoder import EncoderUnavailable
from whatart.retrieval_service.identifier import Identification, Identifier
from whatart.retrieval_service.images import ImageError

log = logging.getLogger("whatart.retrieval_service.api")


async def identify_observed(identifier: Identifier, data: bytes, k: int, request_id: str, api: str) -> Identification:
    """`identifier.identify` with the service's metrics and one log line (`api`: rest or grpc)."""
    metrics.IN_FLIGHT.inc()
    try:
        result = await identifier.identify(data, k)
    except ImageError:
        metrics.IDENTIFY_REQUESTS.labels("bad_image").inc()
        raise
    except EncoderUnavailable:
        metrics.IDENTIFY_REQUESTS.labels("unavailable").inc()
        raise
    finally:
        metrics.IN_FLIGHT.dec()
    metrics.IDENTIFY_REQUESTS.labels("ok").inc()
    for stage, ms in result.timings_ms.items():
        metrics.STAGE_SECONDS.labels(stage).observe(ms / 1e3)
    top = result.matches[0].artwork.id if result.matches else None
    log.info(
        "[%s] %s identify k=%d top=%s in_gallery=%s confidence=%.3f %s total=%.1fms",
        request_id, api, k, top, result.in_gallery, result.confidence,
        " ".join(f"{s}={ms:.1f}ms" for s, ms in result.timings_ms.items()), result.took_ms,
    )
    return result
