"""Valid-looking inputs that used to crash or cost too much: extreme shapes, huge canvases in
few bytes, metadata bombs, out-of-range numbers, odd digits and control characters; each
gets a clear 4xx and the service (real Triton, real index) stays up."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from whatart.retrieval_service.serving.grpc_api import whatart_pb2, whatart_pb2_grpc

from tests.helpers import ServiceEndpoints, served


def _png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def _noise(width: int, height: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _identify(url: str, data: bytes, client: httpx.Client | None = None) -> httpx.Response:
    post = client.post if client else httpx.post
    return post(f"{url}/v1/identify", files={"image": ("upload.png", data)}, timeout=120)


@pytest.mark.parametrize("size", [(640, 32), (32, 640), (6000, 300), (41, 820)])
def test_every_stage_handles_the_most_extreme_shape_accepted(service_url: str, size: tuple[int, int]) -> None:
    response = _identify(service_url, _png(_noise(*size)))
    assert response.status_code == 200, response.text
    assert response.json()["decided_by"] in ("embedding", "views", "verified")


@pytest.mark.parametrize("size", [(641, 32), (32, 100_000), (100_000, 32)])
def test_a_shape_beyond_the_limit_is_refused_by_rest_and_grpc(service: ServiceEndpoints, size: tuple[int, int]) -> None:
    data = _png(Image.new("RGB", size, (120, 80, 40)))
    response = _identify(service.url, data)
    assert response.status_code == 400
    assert "times longer than wide; at most 20 times is accepted" in response.json()["detail"]
    with grpc.insecure_channel(service.grpc) as channel, pytest.raises(grpc.RpcError) as refused:
        whatart_pb2_grpc.IdentifierStub(channel).Identify(whatart_pb2.IdentifyRequest(image=data, k=1), timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "20 times" in refused.value.details()


def test_a_metadata_bomb_is_named_in_plain_words(service_url: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * (8 << 20), zip=True)  # 8 KB on the wire, 8 MB unpacked
    response = _identify(service_url, _png(Image.new("RGB", (64, 64)), pnginfo=info))
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "decompression bomb" in detail and "MAX_TEXT" not in detail and "PngImagePlugin" not in detail


@pytest.mark.parametrize("parameter", ["year_from", "year_to", "offset", "limit"])
def test_numbers_outside_64_bits_get_422_and_the_connection_stays(service_url: str, parameter: str) -> None:
    with httpx.Client(base_url=service_url, timeout=30) as client:
        for value in (2**64, -(2**70), 2**63):
            response = client.get("/v1/artworks", params={parameter: str(value)})
            assert response.status_code == 422, (parameter, value, response.text)
        assert client.get("/v1/artworks", params={"year_from": "1800", "year_to": "1900"}).status_code == 200


@pytest.mark.parametrize("k", ["5_0", "٥", "５", " 5", "+5", "5.0", "9" * 5000])
def test_k_takes_ascii_digits_only_and_an_error_repeats_little_of_it(service_url: str, met_images: list[Path], k: str) -> None:
    response = httpx.post(f"{service_url}/v1/identify", files={"image": ("a.jpg", met_images[0].read_bytes())},
                          data={"k": k}, timeout=60)
    assert response.status_code == 422, response.text
    assert len(response.json()["detail"]) < 120


@pytest.mark.parametrize("value", ["Monet\x7f", "Monet\x85", "\x00"])
def test_filters_refuse_del_and_other_control_characters(service_url: str, met_images: list[Path], value: str) -> None:
    identified = httpx.post(f"{service_url}/v1/identify", files={"image": ("a.jpg", met_images[0].read_bytes())},
                            data={"artist": value}, timeout=60)
    searched = httpx.get(f"{service_url}/v1/artworks", params={"artist": value}, timeout=60)
    for response in (identified, searched):
        assert response.status_code == 400 and "control characters" in response.json()["detail"]


def _pid_serving(url: str) -> int:
    port = str(urlparse(url).port)
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in args and b"--port" in args and args[args.index(b"--port") + 1].decode() == port:
            return int(cmdline.parent.name)
    raise LookupError(f"no `whatart serve` on port {port}")


def _memory_mb(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def test_few_bytes_many_pixels_cost_bounded_memory_and_time(demo_index: Path, triton) -> None:
    bomb = _png(Image.new("RGBA", (7000, 7000), (200, 30, 30, 128)))  # 49 MP under a 50 MP limit, ~200 KB
    assert len(bomb) < 1 << 20
    with served(demo_index, triton.grpc_url) as service:
        pid = _pid_serving(service.url)
        assert _identify(service.url, _png(_noise(300, 200))).status_code == 200  # warm: allocations of a first answer
        before = _memory_mb(pid)
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            statuses = [r.status_code for r in pool.map(lambda _: _identify(service.url, bomb), range(4))]
        seconds = time.monotonic() - started
        time.sleep(1)
        after = _memory_mb(pid)
    assert statuses == [200] * 4
    # Decoding one such canvas holds ~200 MB (RGBA); two decode at once (WHATART_MAX_DECODING_PIXELS)
    # and nothing is copied at full size after, so the peak grows by ~400 MB, not 4 x ~1 GB.
    assert after["VmHWM"] - before["VmHWM"] < 700, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < 200, (before, after)  # and the buffers went back
    assert seconds < 30
