"""`whatart bench load`: many clients against a running service, REST then gRPC.

Each client sends one image after another for the whole duration; a refused request (429 /
RESOURCE_EXHAUSTED) waits the Retry-After it was given, as a polite client would. Reported
per API: requests by outcome, server errors (5xx, or gRPC INTERNAL/UNKNOWN and the like),
and p50/p99 latency of the answered requests and of all of them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.serving.access import bearer, grpc_metadata
from whatart.retrieval_service.serving.grpc_api import whatart_pb2, whatart_pb2_grpc

REFUSED_WAIT_S = 1.0
"""How long a refused client waits when the answer carries no Retry-After."""
CLIENT_ERROR_CODES = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}
"""gRPC outcomes that are the service working as designed; any other failure counts as a server error."""


class ServiceUnreachable(WhatartError):
    """Nothing answers at the URL the bench was given; the message says how to start or point at a service."""


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    answered_ms: list[float] = field(default_factory=list)
    all_ms: list[float] = field(default_factory=list)

    def record(self, outcome: str, ms: float, answered: bool) -> None:
        self.outcomes[outcome] += 1
        self.all_ms.append(ms)
        if answered:
            self.answered_ms.append(ms)

    def figures(self, clients: int, seconds: float, server_errors: int) -> dict[str, object]:
        def percentiles(values: list[float]) -> dict[str, float | None]:
            if not values:
                return {"p50_ms": None, "p99_ms": None}
            return {"p50_ms": round(float(np.percentile(values, 50)), 1), "p99_ms": round(float(np.percentile(values, 99)), 1)}

        requests = sum(self.outcomes.values())
        return {
            "clients": clients, "seconds": round(seconds, 1), "requests": requests,
            "answered_per_s": round(len(self.answered_ms) / seconds, 1), "outcomes": dict(self.outcomes),
            "server_errors": server_errors, "answered": percentiles(self.answered_ms), "all": percentiles(self.all_ms),
        }


async def rest_load(url: str, images: list[bytes], clients: int, seconds: float, token: str) -> dict[str, object]:
    tally, deadline = Tally(), time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, headers=bearer(token)) as http:
        async def client(number: int) -> None:
            turn = number
            while time.monotonic() < deadline:
                begun = time.perf_counter()
                try:
                    response = await http.post("/v1/identify", files={"image": ("image", images[turn % len(images)])})
                    status = str(response.status_code)
                except httpx.HTTPError as error:
                    response, status = None, type(error).__name__
                tally.record(status, (time.perf_counter() - begun) * 1e3, status == "200")
                if response is None:  # no connection or no answer: retrying at once would only spin
                    await asyncio.sleep(REFUSED_WAIT_S)
                elif response.status_code in (429, 503):
                    await asyncio.sleep(float(response.headers.get("retry-after", REFUSED_WAIT_S)))
                turn += clients

        started = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(clients)))
    errors = sum(n for outcome, n in tally.outcomes.items() if not outcome.isdigit() or outcome.startswith("5"))
    return tally.figures(clients, time.monotonic() - started, errors)


async def grpc_load(address: str, images: list[bytes], clients: int, seconds: float, token: str) -> dict[str, object]:
    tally, deadline = Tally(), time.monotonic() + seconds
    metadata = grpc_metadata(token)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = whatart_pb2_grpc.IdentifierStub(channel)

        async def client(number: int) -> None:
            turn = number
            while time.monotonic() < deadline:
                begun = time.perf_counter()
                try:
                    await stub.Identify(whatart_pb2.IdentifyRequest(image=images[turn % len(images)]), timeout=120, metadata=metadata)
                    code = "OK"
                except grpc.aio.AioRpcError as error:
                    code = error.code().name
                tally.record(code, (time.perf_counter() - begun) * 1e3, code == "OK")
                if code in ("RESOURCE_EXHAUSTED", "UNAVAILABLE"):
                    await asyncio.sleep(REFUSED_WAIT_S)
                turn += clients

        started = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(clients)))
    errors = sum(n for code, n in tally.outcomes.items() if code != "OK" and code not in CLIENT_ERROR_CODES)
    return tally.figures(clients, time.monotonic() - started, errors)


def health(url: str) -> int | str:
    """The status of GET /health, or the name of the transport error when nothing answered
    (a service that died under load is a figure, not a traceback)."""
    try:
        return httpx.get(f"{url}/health", timeout=10).status_code
    except httpx.HTTPError as error:
        return type(error).__name__


def run_load(url: str, grpc_address: str | None, paths: list[Path], clients: int, seconds: float,
             token: str = "") -> dict[str, object]:
    if not isinstance(health(url), int):
        raise ServiceUnreachable(f"nothing answers at {url}/health: start `whatart serve` or pass --server")
    images = [path.read_bytes() for path in paths]
    figures: dict[str, object] = {"images": len(images), "rest": asyncio.run(rest_load(url, images, clients, seconds, token))}
    if grpc_address:
        figures["grpc"] = asyncio.run(grpc_load(grpc_address, images, clients, seconds, token))
    figures["health_after"] = health(url)
    return figures
