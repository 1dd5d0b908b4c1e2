"""One bounded number of identifications in flight, shared fairly by unary calls and streams.

At most `limit` identifications run at once, REST, gRPC and stream items together. A unary
request that finds no room is refused at once (REST 429, gRPC RESOURCE_EXHAUSTED, both saying
when to retry) rather than queued without bound, so a crowd gets fast refusals while the
requests already admitted keep their latency. Stream items are never refused: they wait
their turn, and all streams together hold at most `stream_limit` of the places, so unary
callers always have the rest. Each stream asks for one place at a time (grpc_api), and
places go first come first served (fair_slots.py), so concurrent streams take turns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from whatart.retrieval_service import metrics
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.fair_slots import FairSlots

RETRY_AFTER_S = 1


class Overloaded(WhatartError):
    """Too many identifications in progress; the message says how many and when to retry."""


class Admission:
    def __init__(self, limit: int, stream_limit: int) -> None:
        self.limit = limit
        self.places = FairSlots(limit)
        self.stream_places = FairSlots(stream_limit)

    @property
    def pending(self) -> int:
        return self.places.in_use

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Counts one unary identification while the block runs; raises Overloaded when full."""
        if not self.places.try_acquire():
            metrics.IDENTIFY_REQUESTS.labels("overloaded").inc()
            raise Overloaded(f"the service is busy ({self.pending} identifications in progress, the limit is "
                             f"{self.limit}); retry after {RETRY_AFTER_S} s")
        self._counted()
        try:
            yield
        finally:
            self.places.release(1)
            self._counted()

    async def stream_place(self) -> None:
        """Wait for a place for one stream item (the streams' share first, then the limit);
        give it back with `release_stream_place`."""
        await self.stream_places.acquire()
        try:
            await self.places.acquire()
        except BaseException:
            self.stream_places.release(1)
            raise
        self._counted()

    def release_stream_place(self) -> None:
        self.places.release(1)
        self.stream_places.release(1)
        self._counted()

    def _counted(self) -> None:
        metrics.IN_FLIGHT.set(self.pending)
