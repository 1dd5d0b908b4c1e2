"""A weighted, first-come-first-served semaphore for the event loop.

Used where many requests share one bounded resource: identifications in flight (stream items
take turns: serving/admission.py) and pixels being decoded (identify/identifier.py). Waiters
are served strictly in arrival order, so a large request is not starved by a stream of small
ones, and a caller that holds at most one waiting request at a time (a stream's feeder) gets
its turn in rotation with every other.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class FairSlots:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    def try_acquire(self, weight: int = 1) -> bool:
        """Take `weight` at once if it fits and nobody is waiting before us."""
        weight = min(weight, self.capacity)
        if self._waiting or self.in_use + weight > self.capacity:
            return False
        self.in_use += weight
        return True

    async def acquire(self, weight: int = 1) -> int:
        """Wait for `weight` (capped at the capacity, so any request can run alone); returns
        what was taken, to give back with `release`."""
        weight = min(weight, self.capacity)
        if self.try_acquire(weight):
            return weight
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((weight, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # granted just as it was cancelled
                self.release(weight)
            else:
                if (weight, turn) in self._waiting:
                    self._waiting.remove((weight, turn))
                self._grant()  # those behind it may fit now
            raise
        return weight

    def release(self, weight: int) -> None:
        self.in_use -= weight
        self._grant()

    @asynccontextmanager
    async def held(self, weight: int = 1) -> AsyncIterator[None]:
        taken = await self.acquire(weight)
        try:
            yield
        finally:
            self.release(taken)

    def _grant(self) -> None:
        while self._waiting and self.in_use + self._waiting[0][0] <= self.capacity:
            weight, turn = self._waiting.popleft()
            if turn.done():  # cancelled, its task not yet resumed
                continue
            self.in_use += weight
            turn.set_result(None)
