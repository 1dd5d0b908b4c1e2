"""`whatart demo` (what `make demo` runs): everything comes up, and Ctrl-C stops all of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.helpers import WHATART, free_port


def _port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_demo_serves_the_met_gallery_and_stops_on_ctrl_c(tmp_path: Path, met_images: list[Path]) -> None:
    ports = {name: free_port() for name in ("PORT", "GRPC_PORT", "UI_PORT", "TRITON_HTTP_PORT", "TRITON_GRPC_PORT", "TRITON_METRICS_PORT")}
    env = {
        **os.environ,
        **{f"WHATART_{name}": str(port) for name, port in ports.items()},
        "WHATART_TRITON_URL": f"127.0.0.1:{ports['TRITON_GRPC_PORT']}",
        "WHATART_MODEL_REPOSITORY": str(tmp_path / "model_repository"),
    }
    demo = subprocess.Popen(
        [WHATART, "demo", "--index", str(tmp_path / "index")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        for line in demo.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line or time.monotonic() > deadline:
                break
        output = "".join(lines)
        assert "Ctrl-C stops everything" in output, output[-3000:]
        assert f"http://127.0.0.1:{ports['UI_PORT']}" in output
        assert "(model sscd)" in output, "the demo serves SSCD, and says so"
        service = f"http://127.0.0.1:{ports['PORT']}"
        assert httpx.get(f"{service}/health").json()["artworks"] == 174
        harvesters = next(p for p in met_images if p.stem == "435809").read_bytes()
        answer = httpx.post(f"{service}/v1/identify", files={"image": ("h.jpg", harvesters)}, timeout=30).json()
        assert answer["matches"][0]["title"] == "The Harvesters"
        assert httpx.get(f"http://127.0.0.1:{ports['UI_PORT']}").status_code == 200
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        code = demo.wait(timeout=60)
    assert code == 0, "".join(lines)[-3000:]
    assert not any(_port_in_use(port) for port in ports.values()), "a demo process outlived Ctrl-C"
