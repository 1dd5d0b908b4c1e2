"""Triton's control surface is closed: everything but health and metadata needs the whatart key
(access_key.py), over HTTP and gRPC, and a killed Triton leaves none of its processes behind.
Against the real tritonserver; nothing here unloads a model (other tests share this Triton)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.access_key import KEY_HEADER, KeyHeader, TritonKeyError, triton_api_key
from whatart.retrieval_service.triton.encoder import EncoderUnavailable, TritonEncoder
from whatart.retrieval_service.triton.model_contract import INPUT_NAME, OUTPUT_NAME
from whatart.retrieval_service.triton.process import TritonConfig

from tests.conftest import TritonEndpoints
from tests.helpers import own_triton, triton_grpc

MODEL = "sscd"
REFUSED_HTTP = [  # (method, path, JSON body): control, statistics, tracing, logging, shared memory, inference
    ("POST", "/v2/repository/index", {}),
    ("POST", f"/v2/repository/models/{MODEL}/unload", {}),
    ("POST", f"/v2/repository/models/{MODEL}/load", {}),
    ("POST", "/v2/logging", {"log_info": True}),  # the value it has: harmless should it be accepted
    ("GET", "/v2/logging", None),
    ("GET", "/v2/trace/setting", None),
    ("GET", f"/v2/models/{MODEL}/stats", None),
    ("GET", f"/v2/models/{MODEL}/config", None),
    ("GET", "/v2/systemsharedmemory/status", None),
    ("POST", f"/v2/models/{MODEL}/infer", {"inputs": []}),
]


def _pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)


def _json_infer_body() -> dict:
    pixels = _pixels()
    return {"inputs": [{"name": INPUT_NAME, "shape": list(pixels.shape), "datatype": "UINT8", "data": pixels.ravel().tolist()}]}


def _grpc_input() -> grpcclient.InferInput:
    infer_input = grpcclient.InferInput(INPUT_NAME, [1, 224, 224, 3], "UINT8")
    infer_input.set_data_from_numpy(_pixels())
    return infer_input


@pytest.mark.parametrize("headers", [{}, {KEY_HEADER: "not-the-key"}], ids=["no key", "wrong key"])
@pytest.mark.parametrize(("method", "path", "body"), REFUSED_HTTP, ids=[f"{m} {p}" for m, p, _ in REFUSED_HTTP])
def test_http_control_and_inference_need_the_key(triton: TritonEndpoints, method: str, path: str, body: dict | None,
                                                 headers: dict[str, str]) -> None:
    response = httpx.request(method, f"{triton.http_url}{path}", json=body, headers=headers, timeout=30)
    assert response.status_code == 403, response.text
    assert response.json()["error"] == f"This API is restricted, expecting header '{KEY_HEADER}'"


def test_a_browser_style_request_cannot_unload_the_model(triton: TritonEndpoints) -> None:
    """A page can POST text/plain cross-origin without a CORS preflight, but cannot add the key."""
    response = httpx.post(f"{triton.http_url}/v2/repository/models/{MODEL}/unload", content=b"{}",
                          headers={"Content-Type": "text/plain", "Origin": "http://attacker.example"}, timeout=30)
    assert response.status_code == 403
    assert httpx.get(f"{triton.http_url}/v2/models/{MODEL}/ready", timeout=30).status_code == 200


def test_health_and_metadata_stay_open(triton: TritonEndpoints) -> None:
    for path in ("/v2/health/ready", "/v2/health/live", f"/v2/models/{MODEL}/ready"):
        assert httpx.get(f"{triton.http_url}{path}", timeout=30).status_code == 200, path
    assert httpx.get(f"{triton.http_url}/v2", timeout=30).json()["name"] == "triton"
    assert httpx.get(f"{triton.http_url}/v2/models/{MODEL}", timeout=30).json()["outputs"][0]["name"] == OUTPUT_NAME
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    assert client.is_server_ready() and client.is_model_ready(MODEL)
    assert client.get_model_metadata(MODEL).name == MODEL


def test_http_inference_works_with_the_key(triton: TritonEndpoints) -> None:
    response = httpx.post(f"{triton.http_url}/v2/models/{MODEL}/infer", json=_json_infer_body(),
                          headers={KEY_HEADER: triton.config.api_key}, timeout=60)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == OUTPUT_NAME and output["shape"] == [1, 512]
    index = httpx.post(f"{triton.http_url}/v2/repository/index", json={}, headers={KEY_HEADER: triton.config.api_key}, timeout=30)
    assert index.status_code == 200 and MODEL in {model["name"] for model in index.json()}


def test_grpc_control_and_inference_need_the_key(triton: TritonEndpoints) -> None:
    wrong = grpcclient.InferenceServerClient(triton.grpc_url)
    wrong.register_plugin(KeyHeader("not-the-key"))
    calls = {
        "infer": lambda client: client.infer(MODEL, [_grpc_input()]),
        "repository index": lambda client: client.get_model_repository_index(),
        "statistics": lambda client: client.get_inference_statistics(MODEL),
        "model config": lambda client: client.get_model_config(MODEL),
        "log settings": lambda client: client.get_log_settings(),
        "trace settings": lambda client: client.get_trace_settings(),
    }
    for client in (grpcclient.InferenceServerClient(triton.grpc_url), wrong):
        for name, call in calls.items():
            with pytest.raises(InferenceServerException) as refused:
                call(client)
            # Triton answers UNAVAILABLE, the status of a server that cannot be reached
            assert refused.value.status() == "StatusCode.UNAVAILABLE", name
            assert "This protocol is restricted" in refused.value.message(), name
    result = triton_grpc(triton.grpc_url).infer(MODEL, [_grpc_input()])
    assert result.as_numpy(OUTPUT_NAME).shape == (1, 512)


def test_the_encoder_names_a_wrong_key_instead_of_retrying(triton: TritonEndpoints) -> None:
    async def scenario() -> float:
        encoder = TritonEncoder(triton.grpc_url, MODEL, retry_waits_s=(5.0,), api_key="not-the-key")
        try:
            with pytest.raises(EncoderUnavailable, match="refused whatart's key.*WHATART_TRITON_API_KEY"):
                await encoder.served_model()
            started = time.perf_counter()
            with pytest.raises(EncoderUnavailable, match="failed to encode: it refused whatart's key"):
                await encoder.encode(_pixels())
            return time.perf_counter() - started
        finally:
            await encoder.close()

    assert asyncio.run(scenario()) < 5.0, "a refusal is not a connection failure: no retry wait"


def _processes() -> dict[int, tuple[str, int, str, list[bytes]]]:
    """pid -> (name, parent pid, state, command line) of every process, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text, argv = (entry / "stat").read_text(), (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        found[int(entry.name)] = (name, int(rest[1]), rest[0], argv)
    return found


def _stubs_of(config: TritonConfig) -> list[int]:
    """The python-backend stubs of the tritonserver listening on config.http_port."""
    processes = _processes()
    flag = f"--http-port={config.http_port}".encode()
    servers = {pid for pid, (_, _, _, argv) in processes.items() if flag in argv}
    return [pid for pid, (name, parent, _, _) in processes.items() if parent in servers and name.startswith("triton_python")]


def _running(pids: list[int]) -> list[int]:
    """Those still running: neither gone nor a zombie (dead, waiting to be reaped)."""
    processes = _processes()
    return [pid for pid in pids if pid in processes and processes[pid][0].startswith("triton_python") and processes[pid][2] != "Z"]


def test_kill_leaves_no_python_backend_stub_behind(model_repository: Path, tmp_path: Path) -> None:
    """A stub notices on its own that tritonserver died, unless it is hung: SIGSTOP stands in
    for a hang. kill() must end it all the same."""
    with own_triton(model_repository, tmp_path) as (triton, _):
        stubs = _stubs_of(triton.config)
        assert stubs, "the python backend runs the model in a stub process"
        for pid in stubs:
            os.kill(pid, signal.SIGSTOP)
        try:
            triton.kill()
            deadline = time.monotonic() + 10
            while _running(stubs) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _running(stubs), "stubs outlived their tritonserver"
        finally:
            for pid in _running(stubs):  # only if the assertion failed
                os.kill(pid, signal.SIGKILL)


def test_the_key_is_the_variable_else_one_private_file_made_once(tmp_path: Path) -> None:
    file = tmp_path / "state" / "triton-api-key"
    assert triton_api_key(Settings(triton_api_key="from-the-environment", triton_api_key_file=file)) == "from-the-environment"
    assert not file.exists()
    with ThreadPoolExecutor(16) as pool:  # processes starting together make one key and agree on it
        keys = set(pool.map(lambda _: triton_api_key(Settings(triton_api_key_file=file)), range(32)))
    assert keys == {file.read_text().strip()} and len(keys.pop()) >= 40
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert [path.name for path in file.parent.iterdir()] == [file.name], "no drafts left behind"


@pytest.mark.parametrize("bad", ["a b", "a=b", "a:b", "a,b", "clé", "tab\there"])
def test_a_key_triton_could_not_take_is_refused(bad: str, tmp_path: Path) -> None:
    with pytest.raises(TritonKeyError, match="WHATART_TRITON_API_KEY"):
        triton_api_key(Settings(triton_api_key=bad))
    file = tmp_path / "key"
    file.write_text(bad)
    with pytest.raises(TritonKeyError, match=f"{file}.*WHATART_TRITON_API_KEY"):
        triton_api_key(Settings(triton_api_key_file=file))

