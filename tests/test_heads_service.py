"""Style and genre for any image, end to end: a head trained on the demo gallery, baked into
the encoder, served by a real Triton, returned by the REST API on every answer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from tests.helpers import WHATART, abstract_painting, free_port, run_cli, stop, wait_for_http
from whatart.retrieval_service.triton_server import TritonConfig, TritonProcess


def test_identify_returns_style_and_genre_predictions(demo_index: Path, tmp_path: Path, met_images: list[Path]) -> None:
    heads = tmp_path / "heads.pt"
    trained = run_cli("train-head", "--index", str(demo_index), "--out", str(heads), "--min-examples", "5")
    assert trained.returncode == 0, trained.stderr[-2000:]
    repository = tmp_path / "repository"
    exported = run_cli("export", "--encoder", "efficientnet-lite0", "--head", str(heads), "--model-repository", str(repository))
    assert exported.returncode == 0, exported.stderr[-2000:]

    config = TritonConfig(repository, free_port(), free_port(), free_port(), work_dir=tmp_path / "triton")
    triton = TritonProcess(config, log_path=tmp_path / "triton.log")
    triton.start()
    port = free_port()
    # the head does not change the embedding: the index built without it is still accepted
    service = subprocess.Popen(
        [WHATART, "serve", "--index", str(demo_index), "--port", str(port), "--triton-url", f"127.0.0.1:{config.grpc_port}"]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", service)
        harvesters = next(p for p in met_images if p.stem == "435809").read_bytes()
        for image in (harvesters, abstract_painting(seed=1)):
            body = httpx.post(f"{url}/v1/identify", files={"image": ("p.jpg", image)}, timeout=60).json()
            assert set(body["predictions"]) == {"style", "genre"}
            for ranked in body["predictions"].values():
                probabilities = [p["probability"] for p in ranked]
                assert 2 <= len(ranked) <= 3 and probabilities == sorted(probabilities, reverse=True)
                assert 0 < sum(probabilities) <= 1.0001
        known = json.loads(trained.stdout)
        assert body["predictions"]["style"][0]["label"] in known["tasks"]["style"]["labels"]
    finally:
        stop(service)
        triton.stop()
