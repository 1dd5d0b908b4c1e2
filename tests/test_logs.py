"""Structured logs: `WHATART_LOG_FORMAT=json` makes every line of a real `whatart serve` a JSON
object, and an identification's line carries its request id (REST header or gRPC field)
and its timings as fields."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from whatart.client.grpc_client import WhatartGrpcClient

from tests.conftest import TritonEndpoints
from tests.helpers import served


def test_json_logs_carry_request_ids_and_timings(demo_index: Path, triton: TritonEndpoints, met_images: list[Path],
                                                 tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    image = met_images[0].read_bytes()
    with served(demo_index, triton.grpc_url, env={"WHATART_LOG_FORMAT": "json"}, log=log) as service:
        answer = httpx.post(f"{service.url}/v1/identify", files={"image": ("p.jpg", image)}, headers={"x-request-id": "trace-rest"},
                            timeout=60)
        assert answer.headers["x-request-id"] == "trace-rest"
        with WhatartGrpcClient(service.grpc) as client:
            client.identify(image, k=2, request_id="trace-grpc")
        refused = httpx.post(f"{service.url}/v1/identify", files={"image": ("p.jpg", b"no image")}, headers={"x-request-id": "trace-bad"})
        assert refused.status_code == 400
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line: a JSON object
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    identified = {record["request_id"]: record for record in records if record.get("event") == "identify"}
    assert set(identified) == {"trace-rest", "trace-grpc"}
    assert identified["trace-rest"]["api"] == "rest" and identified["trace-grpc"]["api"] == "grpc"
    assert identified["trace-rest"]["top"] == f"met-{met_images[0].stem}"
    # the painting itself: decided by its embedding, so nothing was verified
    assert identified["trace-rest"]["decided_by"] == "embedding"
    assert set(identified["trace-rest"]["timings_ms"]) == {"decode", "triton", "search", "metadata"}
    assert not any(record["level"] == "ERROR" for record in records), "a refused upload is no server error"
