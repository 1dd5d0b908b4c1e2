"""Service start-up checks and behaviour while Triton is away, with real processes."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx

from tests.conftest import TritonEndpoints
from tests.helpers import free_port, run_cli, triton_and_service


def test_serve_refuses_an_index_built_by_another_model(demo_index: Path, triton: TritonEndpoints, tmp_path: Path) -> None:
    copy = tmp_path / "index"
    shutil.copytree(demo_index, copy, symlinks=True)
    manifest_path = (copy / "current").resolve() / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"]["weights_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    result = run_cli("serve", "--index", str(copy), "--port", str(free_port()), "--triton-url", triton.grpc_url, timeout=60)
    assert result.returncode == 2
    assert "built differently from what this service and Triton use (weights_sha256" in result.stderr
    assert "whatart ingest" in result.stderr and "Traceback" not in result.stderr


def test_serve_without_an_index_says_how_to_build_one(tmp_path: Path, triton: TritonEndpoints) -> None:
    result = run_cli("serve", "--index", str(tmp_path / "none"), "--triton-url", triton.grpc_url, timeout=60)
    assert result.returncode == 2 and "whatart ingest SOURCE --index" in result.stderr


def test_service_reports_triton_outage_and_recovers(
    demo_index: Path, model_repository: Path, tmp_path: Path, met_images: list[Path]
) -> None:
    image = {"image": ("p.jpg", met_images[0].read_bytes())}
    with triton_and_service(model_repository, demo_index, tmp_path) as (triton, url), httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("/v1/identify", files=image).status_code == 200
        triton.stop()
        health = http.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        refused = http.post("/v1/identify", files=image)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert "Triton" in refused.json()["detail"]
        triton.start()
        deadline = time.monotonic() + 30
        while http.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the service did not notice Triton's return"
            time.sleep(0.5)
        assert http.post("/v1/identify", files=image).status_code == 200
