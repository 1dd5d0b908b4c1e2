"""Bounded concurrency: over WHATART_MAX_PENDING identifications in progress, unary requests
are refused at once (REST 429, gRPC RESOURCE_EXHAUSTED) with a retry hint; stream items wait."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
from whatart.client.grpc_client import WhatartGrpcClient

from tests.conftest import TritonEndpoints
from tests.helpers import ServiceEndpoints, served


@pytest.fixture(scope="module")
def small_service(demo_index: Path, triton: TritonEndpoints) -> Iterator[ServiceEndpoints]:
    with served(demo_index, triton.grpc_url, env={"WHATART_MAX_PENDING": "2", "WHATART_MAX_STREAM_PENDING": "1"}) as endpoints:
        yield endpoints


def test_a_crowd_gets_fast_refusals_and_the_admitted_get_answers(small_service: ServiceEndpoints, met_images: list[Path]) -> None:
    data = met_images[0].read_bytes()

    def post(_: int) -> httpx.Response:
        return httpx.post(f"{small_service.url}/v1/identify", files={"image": ("a.jpg", data)}, timeout=120)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, range(16)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 429}, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1" and "the limit is 2" in refused.json()["detail"]
    assert all(r.json()["matches"][0]["id"] == f"met-{met_images[0].stem}" for r in responses if r.status_code == 200)
    assert post(0).status_code == 200, "once the crowd is gone, requests are admitted again"


def test_grpc_unary_calls_are_refused_but_a_stream_waits(small_service: ServiceEndpoints, met_images: list[Path]) -> None:
    data = met_images[1].read_bytes()
    with WhatartGrpcClient(small_service.grpc) as client:
        def call(_: int) -> str:
            try:
                client.identify(data, k=1)
                return "OK"
            except grpc.RpcError as error:
                assert "busy" in error.details()
                return error.code().name

        with ThreadPoolExecutor(12) as pool:
            codes = set(pool.map(call, range(12)))
        assert codes == {"OK", "RESOURCE_EXHAUSTED"}, codes
        answers = list(client.identify_stream([(str(i), path.read_bytes()) for i, path in enumerate(met_images[:8])], k=1))
    assert len(answers) == 8 and not any("error" in answer for answer in answers)
