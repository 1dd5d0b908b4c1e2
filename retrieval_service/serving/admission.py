"""Bounded concurrency for identifications: back-pressure instead of a pile-up.

At most `limit` identifications are in progress at once, REST and gRPC together. The next
unary request is refused at once (REST 429, gRPC RESOURCE_EXHAUSTED, both saying when to
retry) rather than queued without bound, so a crowd gets fast refusals while the requests
already admitted keep their latency. Items of an IdentifyStream are counted but not
refused: a stream bounds itself (grpc_api.STREAM_IN_FLIGHT) and its client waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from whatart.retrieval_service import metrics
from whatart.retrieval_service.errors import WhatartError

RETRY_AFTER_S = 1


class Overloaded(WhatartError):
    """Too many identifications in progress; the message says how many and when to retry."""


class Admission:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending = 0

    @contextmanager
    def admitted(self, refusable: bool = True) -> Iterator[None]:
        """Counts one identification while the block runs; raises Overloaded when full.
        The event loop is single-threaded, so the count needs no lock."""
        if refusable and self.pending >= self.limit:
            metrics.IDENTIFY_REQUESTS.labels("overloaded").inc()
            raise Overloaded(f"the service is busy ({self.pending} identifications in progress, the limit is "
                             f"{self.limit}); retry after {RETRY_AFTER_S} s")
        self.pending += 1
        metrics.IN_FLIGHT.set(self.pending)
        try:
            yield
        finally:
            self.pending -= 1
            metrics.IN_FLIGHT.set(self.pending)
