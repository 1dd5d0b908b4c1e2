"""What a careless or hostile HTTP client can do to the real service: bodies without a length,
slow headers and bodies, forged request ids, the docs and the token's scheme.

One service of its own with small limits (1 MiB uploads, 1 s timeouts, a token), so each
bound shows in seconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from whatart.retrieval_service.evaluation.hostile_requests import closed_within, connect, flood_chunked
from whatart.retrieval_service.serving.grpc_api import whatart_pb2, whatart_pb2_grpc

from tests.helpers import ServiceEndpoints, served

TOKEN = "hardening-token"
LIMIT = 1024 * 1024
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def strict(demo_index: Path, triton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceEndpoints]:
    env = {"WHATART_MAX_UPLOAD_BYTES": str(LIMIT), "WHATART_REQUEST_HEADER_TIMEOUT_S": "1",
           "WHATART_REQUEST_BODY_TIMEOUT_S": "1", "WHATART_API_TOKEN": TOKEN}
    with served(demo_index, triton.grpc_url, env=env, log=tmp_path_factory.mktemp("strict") / "service.log") as service:
        yield service


def test_a_chunked_body_is_cut_at_the_limit_while_it_streams(strict: ServiceEndpoints) -> None:
    sent, answer = flood_chunked(strict.url, f"Authorization: Bearer {TOKEN}\r\n", 200 * LIMIT)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"exceeds the limit of 1,048,576 bytes" in answer  # what the limit is, not just "too large"
    assert sent < 40 * LIMIT  # read up to the limit, not to the end (the socket buffers hold the rest)


def test_headers_sent_a_byte_at_a_time_are_cut_off(strict: ServiceEndpoints) -> None:
    sock = connect(strict.url)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: whatart\r\n")
    started = time.monotonic()
    for _ in range(3):  # still sending, slowly: a keep-alive timer alone would be reset by each byte
        sock.sendall(b"X")
        time.sleep(0.3)
    closed, said = closed_within(sock, 5)
    sock.close()
    assert closed and said == b"" and time.monotonic() - started < 5


def test_a_stalled_body_gets_408_and_the_connection_closed(strict: ServiceEndpoints) -> None:
    sock = connect(strict.url)
    sock.sendall(f"POST /v1/identify HTTP/1.1\r\nHost: whatart\r\nAuthorization: Bearer {TOKEN}\r\n"
                 "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n".encode())
    closed, said = closed_within(sock, 6)
    sock.close()
    assert said.startswith(b"HTTP/1.1 408"), said[:200]
    assert b"WHATART_REQUEST_BODY_TIMEOUT_S" in said and closed
    assert httpx.get(f"{strict.url}/health", timeout=30).status_code == 200  # and the service is fine


def test_an_unsafe_or_huge_request_id_is_replaced_not_logged(strict: ServiceEndpoints, met_images: list[Path]) -> None:
    huge = "a" * 8000
    response = httpx.get(f"{strict.url}/health", headers={"X-Request-ID": huge}, timeout=30)
    assert response.headers["x-request-id"] != huge and len(response.headers["x-request-id"]) <= 64
    kept = httpx.get(f"{strict.url}/health", headers={"X-Request-ID": "job-7:item.3"}, timeout=30)
    assert kept.headers["x-request-id"] == "job-7:item.3"

    forged = "x\n2026-01-01 00:00:00,000 INFO forged [-]: FORGED LINE"
    with grpc.insecure_channel(strict.grpc) as channel:
        answer = whatart_pb2_grpc.IdentifierStub(channel).Identify(
            whatart_pb2.IdentifyRequest(image=met_images[0].read_bytes(), k=1, request_id=forged),
            metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=60)
    assert answer.request_id != forged and "\n" not in answer.request_id
    log = strict.log.read_text()
    assert "FORGED LINE" not in log and huge not in log
    assert f"[{answer.request_id}]" in log


def test_the_docs_need_the_token_and_the_scheme_is_case_insensitive(strict: ServiceEndpoints) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{strict.url}{path}", timeout=30).status_code == 401, path
        assert httpx.get(f"{strict.url}{path}", headers=AUTH, timeout=30).status_code == 200, path
    for scheme in ("bearer", "BEARER", "Bearer"):
        response = httpx.get(f"{strict.url}/v1/artworks", headers={"Authorization": f"{scheme} {TOKEN}"}, timeout=30)
        assert response.status_code == 200, scheme
    assert httpx.get(f"{strict.url}/v1/artworks", headers={"Authorization": f"Basic {TOKEN}"}, timeout=30).status_code == 401
    assert httpx.get(f"{strict.url}/health", timeout=30).status_code == 200  # probes stay open
