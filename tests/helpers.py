"""Shared test utilities: ports, subprocesses, and the distorted copies users would send."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image, ImageDraw, ImageFilter
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.access_key import KeyHeader, triton_api_key
from whatart.retrieval_service.triton.process import TritonConfig, TritonProcess

WHATART = str(Path(sys.executable).with_name("whatart"))
"""The installed console script, so tests exercise the real entry point."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def triton_key() -> str:
    """The key of the tests' Triton servers: the one every `whatart` the tests start (same
    working directory and environment) resolves, from .whatart/triton-api-key unless set."""
    return triton_api_key(Settings.from_env())


def triton_grpc(url: str) -> grpcclient.InferenceServerClient:
    """A synchronous gRPC client of the tests' Triton at `url` that sends the key with every call."""
    client = grpcclient.InferenceServerClient(url)
    client.register_plugin(KeyHeader(triton_key()))
    return client


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([WHATART, *args], capture_output=True, text=True, timeout=timeout, env=env)


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def wait_for_http(url: str, process: subprocess.Popen | None = None, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def distorted_copy(path: Path, rng: np.random.Generator, rotation_sd: float = 5.0, blur_sd: float = 1.0,
                   quality: int = 85) -> bytes:
    """A photo-like copy of a gallery image: rotated theta ~ N(0, rotation_sd) degrees (black
    fill, no expansion), Gaussian blur sigma ~ |N(0, blur_sd)| px, re-encoded as JPEG."""
    image = Image.open(path).convert("RGB")
    image = image.rotate(float(rng.normal(0, rotation_sd)), resample=Image.Resampling.BILINEAR, expand=False)
    image = image.filter(ImageFilter.GaussianBlur(abs(float(rng.normal(0, blur_sd)))))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def abstract_painting(seed: int) -> bytes:
    """A JPEG of random coloured ellipses: a picture that is in no gallery."""
    rng = np.random.default_rng(seed)
    canvas = Image.new("RGB", (480, 360), (235, 225, 200))
    draw = ImageDraw.Draw(canvas)
    for _ in range(40):
        x, y = int(rng.integers(0, 480)), int(rng.integers(0, 360))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x, y, x + int(rng.integers(10, 120)), y + int(rng.integers(10, 120))), fill=colour)
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@dataclass(frozen=True)
class ServiceEndpoints:
    url: str
    """REST base URL"""
    grpc: str
    """gRPC address host:port"""
    log: Path | None = None
    """where the service's output goes, if `served` was given a log"""


@contextmanager
def served(index_dir: Path, triton_url: str, *flags: str, env: dict[str, str] | None = None,
           log: Path | None = None) -> Iterator[ServiceEndpoints]:
    """`whatart serve` over `index_dir` on free ports (extra `flags`, `env` added to ours, output
    to `log` if given) until the block ends."""
    port, grpc_port = free_port(), free_port()
    sink = log.open("w") if log else None
    process = subprocess.Popen(
        [WHATART, "serve", "--index", str(index_dir), "--port", str(port), "--grpc-port", str(grpc_port),
         "--triton-url", triton_url, *flags],
        env={**os.environ, **(env or {})}, stdout=sink, stderr=subprocess.STDOUT if sink else None,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", process)
        yield ServiceEndpoints(url, f"127.0.0.1:{grpc_port}", log)
    finally:
        stop(process)
        if sink:
            sink.close()


@contextmanager
def own_triton(model_repository: Path, work_dir: Path) -> Iterator[tuple[TritonProcess, str]]:
    """A Triton of its own on `model_repository`, on free ports, its files and log under
    `work_dir`, until the block ends: (the process, to stop or restart; its gRPC address)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    config = TritonConfig(model_repository, free_port(), free_port(), free_port(), work_dir=work_dir / "triton",
                          api_key=triton_key())
    triton = TritonProcess(config, log_path=work_dir / "triton.log")
    try:
        triton.start()
        yield triton, f"{config.host}:{config.grpc_port}"
    finally:
        triton.stop()


@contextmanager
def triton_and_service(model_repository: Path, index_dir: Path, work_dir: Path,
                       env: dict[str, str] | None = None) -> Iterator[tuple[TritonProcess, str, str]]:
    """A Triton of its own on `model_repository` and `whatart serve` over `index_dir` on it,
    for tests that stop Triton or serve a model the session's Triton does not have:
    (Triton, REST URL, gRPC address). The service stops before Triton."""
    with own_triton(model_repository, work_dir) as (triton, triton_url), served(index_dir, triton_url, env=env) as service:
        yield triton, service.url, service.grpc
