"""Requests a careless or hostile HTTP client sends, beyond bad images: what `whatart bench
reliability` adds to its inputs table, and the raw-socket clients its tests use too.

Each probe returns {input, status, answer, seconds}: the status the service answered with
(or "closed" when it closed the connection without one) and what it said.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from urllib.parse import urlparse

import httpx

FLOOD_CHUNK = 64 * 1024


def connect(url: str) -> socket.socket:
    address = urlparse(url)
    return socket.create_connection((address.hostname, address.port), timeout=10)


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed the connection within `seconds`, and what it said first."""
    deadline, said = time.monotonic() + seconds, b""
    while time.monotonic() < deadline:
        if select.select([sock], [], [], 0.2)[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return True, said
            said += chunk
    return False, said


def flood_chunked(url: str, headers: str, up_to_bytes: int) -> tuple[int, bytes]:
    """POST /v1/identify with a chunked multipart body of up to `up_to_bytes`, sent until the
    service answers: (bytes sent by then, the answer)."""
    sock = connect(url)
    boundary = "whatart-flood"
    sock.sendall((f"POST /v1/identify HTTP/1.1\r\nHost: whatart\r\n{headers}"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
    chunk, sent, answer = b"%x\r\n%s\r\n" % (FLOOD_CHUNK, b"\xff" * FLOOD_CHUNK), 0, b""
    sock.setblocking(False)
    while sent < up_to_bytes and not answer:
        try:
            sock.send(chunk)
            sent += FLOOD_CHUNK
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            break
        if select.select([sock], [], [], 0.01)[0]:
            answer = sock.recv(65536)
    sock.setblocking(True)
    answer += closed_within(sock, 5)[1]
    sock.close()
    return sent, answer


def _status(answer: bytes) -> int | str:
    parts = answer.split(b" ", 2)
    return int(parts[1]) if answer.startswith(b"HTTP/") and len(parts) > 1 else "closed"


def _slow_headers(url: str, wait_s: float) -> tuple[int | str, str]:
    sock = connect(url)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: whatart\r\n")
    closed, said = closed_within(sock, wait_s)
    sock.close()
    return _status(said), "closed by the service" if closed else f"still open after {wait_s:.0f} s"


def _stalled_body(url: str, wait_s: float) -> tuple[int | str, str]:
    sock = connect(url)
    sock.sendall(b"POST /v1/identify HTTP/1.1\r\nHost: whatart\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 b"Content-Length: 100000\r\n\r\n--b\r\n")
    closed, said = closed_within(sock, wait_s)
    sock.close()
    return _status(said), said.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")[:200] or ("closed" if closed else "no answer")


def probe_requests(url: str, max_upload_bytes: int, header_timeout_s: float, body_timeout_s: float,
                   image: bytes) -> list[dict[str, object]]:
    """Every probe against the service at `url` (no token), one after another."""

    def post(**fields: str) -> Callable[[], tuple[int, str]]:
        def send() -> tuple[int, str]:
            response = httpx.post(f"{url}/v1/identify", files={"image": ("a.jpg", image)}, data=fields, timeout=120)
            return response.status_code, response.json().get("detail", "answered")
        return send

    def get(path: str, **params: str) -> Callable[[], tuple[int, str]]:
        def send() -> tuple[int, str]:
            response = httpx.get(f"{url}{path}", params=params, timeout=60)
            return response.status_code, response.json().get("detail", "answered") if response.status_code != 200 else "answered"
        return send

    def long_request_id() -> tuple[int, str]:
        response = httpx.get(f"{url}/health", headers={"X-Request-ID": "a" * 8000}, timeout=60)
        return response.status_code, f"echoed id of {len(response.headers['x-request-id'])} characters"

    def chunked() -> tuple[int | str, str]:
        sent, answer = flood_chunked(url, "", 20 * max_upload_bytes)
        return _status(answer), f"{sent:,} bytes sent before the answer"

    probes: list[tuple[str, Callable[[], tuple[int | str, str]]]] = [
        ("k = '5_0'", post(k="5_0")),
        ("k = Arabic-Indic digit five", post(k="\u0665")),
        ("artist filter with DEL", post(artist="Monet\x7f")),
        ("year_from = 2**64", get("/v1/artworks", year_from=str(2**64))),
        ("offset = 2**63", get("/v1/artworks", offset=str(2**63))),
        ("X-Request-ID of 8,000 characters", long_request_id),
        ("chunked body over the upload limit", chunked),
        ("request headers that never end", lambda: _slow_headers(url, header_timeout_s + 5)),
        ("a body that stalls", lambda: _stalled_body(url, body_timeout_s + 5)),
    ]
    rows = []
    for name, probe in probes:
        started = time.perf_counter()
        status, answer = probe()
        rows.append({"input": name, "status": status, "answer": answer, "seconds": round(time.perf_counter() - started, 2)})
    return rows
