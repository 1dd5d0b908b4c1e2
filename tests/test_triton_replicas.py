"""Several Triton replicas behind one service (WHATART_TRITON_URL=a,b): requests spread over
them, a replica that goes down is passed over without waiting, and replicas serving
different exports are refused. Real Triton servers, each on its own ports."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from whatart.retrieval_service.triton.encoder import EncoderUnavailable, TritonEncoder
from whatart.retrieval_service.triton.process import TritonProcess

from tests.conftest import TritonEndpoints
from tests.helpers import own_triton, served, triton_grpc, triton_key

MODEL = "sscd"


@pytest.fixture()
def second_triton(triton: TritonEndpoints, tmp_path: Path) -> Iterator[tuple[TritonProcess, str]]:
    """Another replica of the session's Triton: same model repository, its own ports."""
    with own_triton(triton.config.model_repository, tmp_path / "triton-b") as replica:
        yield replica


def _executions(url: str) -> int:
    """Inferences Triton at `url` has run for the model (its own statistics)."""
    with triton_grpc(url) as client:
        stats = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0))


def test_requests_spread_over_replicas_and_skip_one_that_is_down(triton: TritonEndpoints,
                                                                  second_triton: tuple[TritonProcess, str]) -> None:
    process, second = second_triton
    pixels = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)

    async def encode_many(encoder: TritonEncoder, count: int) -> float:
        started = time.perf_counter()
        await asyncio.gather(*(encoder.encode(pixels) for _ in range(count)))
        return time.perf_counter() - started

    async def scenario() -> tuple[dict[str, int], float, dict[str, bool]]:
        # a gRPC target URI works as well as host:port (dns:///name:port spreads over every address of name)
        encoder = TritonEncoder(f"dns:///{triton.grpc_url},{second}", MODEL, retry_waits_s=(5.0,), api_key=triton_key())
        before = {url: _executions(url) for url in (triton.grpc_url, second)}  # by host:port
        await encode_many(encoder, 32)
        spread = {url: _executions(url) - before[url] for url in before}
        process.stop()
        seconds = await encode_many(encoder, 16)  # the first failure passes the replica over, with no 5 s wait
        readiness = await encoder.readiness()
        await encoder.close()
        return spread, seconds, readiness

    spread, seconds, readiness = asyncio.run(scenario())
    assert sum(spread.values()) == 32 and min(spread.values()) >= 8, f"both replicas take a share: {spread}"
    assert seconds < 5.0, f"a replica that is down costs no retry wait ({seconds:.1f} s)"
    assert readiness == {f"dns:///{triton.grpc_url}": True, second: False}


def test_the_service_reports_each_replica_and_answers_while_one_is_down(
    triton: TritonEndpoints, second_triton: tuple[TritonProcess, str], demo_index: Path, met_images: list[Path]
) -> None:
    process, second = second_triton
    with served(demo_index, f"{triton.grpc_url},{second}") as service, httpx.Client(base_url=service.url, timeout=60) as http:
        assert http.get("/health").json()["triton_replicas"] == {triton.grpc_url: "ready", second: "ready"}
        for path in met_images[:4]:
            assert http.post("/v1/identify", files={"image": ("p.jpg", path.read_bytes())}).status_code == 200
        exposition = http.get("/metrics/").text
        ok = r'whatart_triton_requests_total\{endpoint="([^"]+)",outcome="ok"\} [1-9]'
        used = {match.group(1) for match in re.finditer(ok, exposition)}
        assert used == {triton.grpc_url, second}
        process.stop()
        health = http.get("/health")
        assert health.status_code == 200 and health.json()["triton_replicas"][second] == "not ready"
        answer = http.post("/v1/identify", files={"image": ("p.jpg", met_images[5].read_bytes())})
        assert answer.status_code == 200 and answer.json()["matches"][0]["id"] == f"met-{met_images[5].stem}"


def test_replicas_serving_different_exports_are_refused(triton: TritonEndpoints, tmp_path: Path) -> None:
    repository = tmp_path / "other-export"
    shutil.copytree(triton.config.model_repository, repository)
    config_file = repository / MODEL / "config.pbtxt"
    # another preprocessing (the weights' sha256 is checked against the installed file when the model loads)
    config_file.write_text(re.sub(r'(whatart\.preprocessing" value: \{ string_value: ")[^"]+', r"\g<1>resize 0123abcd",
                                  config_file.read_text()))

    async def describe(other: str) -> None:
        encoder = TritonEncoder(f"{triton.grpc_url},{other}", MODEL, api_key=triton_key())
        try:
            await encoder.served_model()
        finally:
            await encoder.close()

    with own_triton(repository, tmp_path / "triton-c") as (_, other), \
            pytest.raises(EncoderUnavailable, match="Triton replicas disagree about model 'sscd'.*preprocessing.*0123abcd"):
        asyncio.run(describe(other))


def test_the_one_encoder_is_found_through_a_list_of_replicas(triton: TritonEndpoints) -> None:
    """`--model` left out with WHATART_TRITON_URL naming several replicas: the first answers."""
    from whatart.retrieval_service.triton.encoder import resolve_model, served_as

    listed = f"{triton.grpc_url},127.0.0.1:1"
    assert asyncio.run(resolve_model(listed, None, triton_key())) == MODEL
    assert asyncio.run(served_as(listed, MODEL, triton_key())) == MODEL, "the session's Triton serves no heads"
