"""One identification as both APIs run it: counted by outcome, timed per stage, logged."""

from __future__ import annotations

import logging

from whatart.retrieval_service import metrics
from whatart.retrieval_service.errors import DependencyUnavailable
from whatart.retrieval_service.identify.answer import Identification
from whatart.retrieval_service.identify.identifier import Identifier
from whatart.retrieval_service.images import ImageError
from whatart.retrieval_service.index.metadata import MetadataFilter

log = logging.getLogger("whatart.retrieval_service.serving.api")


async def identify_observed(identifier: Identifier, data: bytes, k: int, api: str, where: MetadataFilter | None = None,
                            explain: bool = False) -> Identification:
    """`identifier.identify` with the service's metrics and one log line (`api`: rest or grpc;
    the request id is log_format.REQUEST_ID's)."""
    try:
        result = await identifier.identify(data, k, where, explain)
    except ImageError:
        metrics.IDENTIFY_REQUESTS.labels("bad_image").inc()
        raise
    except DependencyUnavailable:
        metrics.IDENTIFY_REQUESTS.labels("unavailable").inc()
        raise
    except Exception:
        metrics.IDENTIFY_REQUESTS.labels("error").inc()
        raise
    metrics.IDENTIFY_REQUESTS.labels("ok").inc()
    metrics.DECIDED.labels(result.decided_by).inc()
    metrics.IDENTIFY_SECONDS.labels(api).observe(result.took_ms / 1e3)
    for stage, ms in result.timings_ms.items():
        metrics.STAGE_SECONDS.labels(stage).observe(ms / 1e3)
    top = result.matches[0].artwork.id if result.matches else None
    log.info(
        "%s identify k=%d top=%s in_gallery=%s confidence=%.3f decided_by=%s %s total=%.1fms",
        api, k, top, result.in_gallery, result.confidence, result.decided_by,
        " ".join(f"{s}={ms:.1f}ms" for s, ms in result.timings_ms.items()), result.took_ms,
        extra={"event": "identify", "api": api, "k": k, "top": top, "in_gallery": result.in_gallery,
               "confidence": round(result.confidence, 4), "decided_by": result.decided_by, "timings_ms": result.timings_ms,
               "took_ms": result.took_ms,
               "filter": where.conditions() if where else None},
    )
    return result
