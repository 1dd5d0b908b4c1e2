"""The running service, measured as clients use it, for `whatart bench throughput`.

The bench starts its own `whatart serve` (a real process, REST + gRPC, on free ports) over
the given index and Triton, and measures: batch identification through the real `whatart
identify --batch` command (one gRPC IdentifyStream), the same images over REST with many
requests in flight, and single-image REST latency one request at a time.

Benches sit below the client: they are given the command that runs `whatart` (`Whatart`,
from the CLI) and speak HTTP themselves: nothing here imports the client package.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from whatart.retrieval_service.errors import WhatartError

START_TIMEOUT_S = 180.0
Whatart = Sequence[str]
"""The command that runs the `whatart` CLI (e.g. this interpreter with `-m` and its module)."""


class ServiceDidNotStart(WhatartError):
    """`whatart serve` exited or never became healthy; the message points at its log."""


class ClientFailed(WhatartError):
    """A request or `whatart identify --batch` failed as a whole; the message says how."""


@dataclass(frozen=True)
class Service:
    url: str
    grpc: str


@dataclass(frozen=True)
class Answers:
    """What a client saw for a set of images."""

    images: int
    seconds: float
    latencies_ms: list[float]
    top_ids: dict[str, str | None]
    """file -> top match id (None: refused or no match)"""
    same_weights: bool = True
    """False for the seed loop running random weights beside a served model it cannot run"""
    decided_by: dict[str, int] = field(default_factory=dict)
    """stage of the cascade -> answers it gave (the service's answers only)"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """`whatart serve --mode MODE` on fixed free ports, which can be killed and started again
    at the same address; its log goes to a file."""

    def __init__(self, whatart: Whatart, index_dir: Path, triton_url: str, mode: str, log_file: Path | None = None) -> None:
        port, grpc_port = free_port(), free_port()
        self.whatart = tuple(whatart)
        self.address = Service(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}")
        self.command = [*self.whatart, "serve", "--index", str(index_dir), "--triton-url", triton_url, "--mode", mode,
                        "--port", str(port), "--grpc-port", str(grpc_port)]
        self.log_file = log_file or _new_log_file()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        # a private service on loopback, open to the bench's clients alone
        environment = {key: value for key, value in os.environ.items() if key != "WHATART_API_TOKEN"}
        with self.log_file.open("a") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            env={**environment, "WHATART_HOST": "127.0.0.1"})
        self.wait_healthy()

    def wait_healthy(self) -> None:
        """Until /health is 200: after start, or after something it depends on (Triton) came back."""
        assert self.process is not None, "start() the service first"
        _wait_healthy(self.address.url, self.process, self.log_file)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def _new_log_file() -> Path:
    """An empty log file of its own; only its name is kept (start() reopens it for each process)."""
    descriptor, name = tempfile.mkstemp(prefix="whatart-bench-serve-", suffix=".log")
    os.close(descriptor)
    return Path(name)


@contextmanager
def running_service(whatart: Whatart, index_dir: Path, triton_url: str, mode: str) -> Iterator[ServiceProcess]:
    """A started ServiceProcess until the block ends."""
    service = ServiceProcess(whatart, index_dir, triton_url, mode)
    try:
        service.start()
        yield service
    finally:
        service.stop()
    service.log_file.unlink()  # kept only when the bench failed, for its error to point at


def _wait_healthy(url: str, process: subprocess.Popen, log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceDidNotStart(f"`whatart serve` exited with {process.returncode}; its log: {log_file}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ServiceDidNotStart(f"`whatart serve` was not healthy within {START_TIMEOUT_S:.0f} s; its log: {log_file}")


def batch_command(whatart: Whatart, grpc: str, files: list[Path], out: Path) -> list[str]:
    """`whatart identify --batch` over `files` (listed in a file beside `out`), answers to `out`."""
    listing = out.with_suffix(".files.txt")  # beside the results: the images' folder is never written to
    listing.write_text("".join(f"{path}\n" for path in files))
    return [*whatart, "identify", "--batch", str(listing), "--out", str(out), "--grpc", grpc, "--k", "5", "--no-progress"]


def run_batch_command(command: list[str]) -> dict:
    """Run a `batch_command` to its end; its JSON summary (answered, failed, seconds, ...).
    Exit 1 (some images unavailable) still has a summary; anything else is a ClientFailed."""
    finished = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    summary = finished.stdout.strip().splitlines()
    if finished.returncode not in (0, 1) or not summary:
        raise ClientFailed(f"`whatart identify --batch` exited with {finished.returncode} without its summary: "
                           f"{finished.stderr[-2000:] or 'nothing on stderr'}")
    return json.loads(summary[-1])


def grpc_batch(whatart: Whatart, service: Service, files: list[Path]) -> Answers:
    """`whatart identify --batch` over `files` (one IdentifyStream); latency is each answer's
    time inside the service (`took_ms`) under that load."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "results.jsonl"
        report = run_batch_command(batch_command(whatart, service.grpc, files, out))
        lines = [json.loads(line) for line in out.read_text().splitlines()]
    return Answers(
        images=report["answered"] + report["failed"],
        seconds=report["seconds"],
        latencies_ms=[line["took_ms"] for line in lines if "took_ms" in line],
        top_ids={line["file"]: (line["matches"][0]["id"] if line.get("matches") else None) for line in lines},
        decided_by=dict(Counter(line["decided_by"] for line in lines if "decided_by" in line)),
    )


def rest_requests(service: Service, files: list[Path], in_flight: int) -> Answers:
    """POST /v1/identify for each file, `in_flight` at a time; latency as the client sees it."""
    with httpx.Client(base_url=service.url, timeout=120) as client:

        def identify(path: Path) -> dict:
            response = client.post("/v1/identify", files={"image": (path.name, path.read_bytes())}, data={"k": "5"})
            if response.status_code != 200:
                raise ClientFailed(f"POST /v1/identify {path.name} answered {response.status_code}: {response.text[:500]}")
            return response.json()

        identify(files[0])  # warm-up: connection, first-request allocations

        def one(path: Path) -> tuple[str, float, str | None, str]:
            begun = time.perf_counter()
            answer = identify(path)
            top = answer["matches"][0]["id"] if answer["matches"] else None
            return str(path), (time.perf_counter() - begun) * 1e3, top, answer["decided_by"]

        started = time.perf_counter()
        with ThreadPoolExecutor(in_flight) as pool:
            results = list(pool.map(one, files))
        seconds = time.perf_counter() - started
    return Answers(len(files), seconds, [ms for _, ms, _, _ in results], {path: top for path, _, top, _ in results},
                   decided_by=dict(Counter(stage for _, _, _, stage in results)))
