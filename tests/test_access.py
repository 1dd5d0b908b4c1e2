"""WHATART_API_TOKEN: /v1 routes and the gRPC Identifier need the bearer token; probes stay
open; the token never reaches the logs; CORS is off."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from whatart.client.grpc_client import WhatartGrpcClient

from tests.conftest import TritonEndpoints
from tests.helpers import ServiceEndpoints, run_cli, served

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def guarded(demo_index: Path, triton: TritonEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceEndpoints]:
    log = tmp_path_factory.mktemp("guarded") / "serve.log"
    with served(demo_index, triton.grpc_url, env={"WHATART_API_TOKEN": TOKEN}, log=log) as endpoints:
        yield endpoints


def test_rest_needs_the_token_but_probes_do_not(guarded: ServiceEndpoints, met_images: list[Path]) -> None:
    upload = {"image": ("a.jpg", met_images[0].read_bytes())}
    missing = httpx.post(f"{guarded.url}/v1/identify", files=upload, timeout=60)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["detail"]
    wrong = httpx.get(f"{guarded.url}/v1/artworks", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and "not valid" in wrong.json()["detail"]
    right = httpx.post(f"{guarded.url}/v1/identify", files=upload, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert right.status_code == 200 and right.json()["matches"][0]["id"] == f"met-{met_images[0].stem}"
    assert httpx.get(f"{guarded.url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{guarded.url}/metrics/", timeout=10).status_code == 200


def test_the_cli_sends_the_token_from_the_environment(guarded: ServiceEndpoints, met_images: list[Path]) -> None:
    env = {**os.environ, "WHATART_API_TOKEN": TOKEN}
    result = run_cli("identify", str(met_images[1]), "--server", guarded.url, env=env)
    assert result.returncode == 0, result.stderr
    refused = run_cli("identify", str(met_images[1]), "--server", guarded.url,
                      env={k: v for k, v in os.environ.items() if k != "WHATART_API_TOKEN"})
    assert refused.returncode == 1 and "401" in refused.stdout + refused.stderr


def test_grpc_needs_the_token_but_health_does_not(guarded: ServiceEndpoints, met_images: list[Path]) -> None:
    data = met_images[2].read_bytes()
    with WhatartGrpcClient(guarded.grpc) as anonymous:
        with pytest.raises(grpc.RpcError) as unary:
            anonymous.identify(data)
        assert unary.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as stream:
            list(anonymous.identify_stream([("0", data)]))
        assert stream.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(anonymous.channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    with WhatartGrpcClient(guarded.grpc, token=TOKEN) as client:
        assert client.identify(data, k=1)["matches"][0]["id"] == f"met-{met_images[2].stem}"
        assert [answer["request_id"] for answer in client.identify_stream([("7", data)], k=1)] == ["7"]


def test_cors_is_off_and_the_token_is_never_logged(guarded: ServiceEndpoints) -> None:
    response = httpx.options(f"{guarded.url}/v1/identify", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, timeout=10)
    assert "access-control-allow-origin" not in response.headers
    assert guarded.log is not None
    log = guarded.log.read_text()
    assert f"serving on {guarded.url}" in log, "the log being searched is the service's"
    assert TOKEN not in log
