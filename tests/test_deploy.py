"""deploy/ is consistent: the Prometheus and Grafana configs and the Kubernetes example manifests.

No Kubernetes cluster, Prometheus or Grafana runs here, so the files are checked structurally: they
parse, and names, selectors, ports and metric names agree with each other. The dashboard's metric
names are checked against the live /metrics of the session's Triton and `whatart serve`.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from whatart.retrieval_service.triton.process import restriction_flags

from tests.conftest import TritonEndpoints

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "whatart.json"
YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
# Triton exports GPU metrics only when it has a GPU; the session's Triton runs on CPU.
GPU_ONLY_METRICS = {"nv_gpu_utilization", "nv_gpu_memory_used_bytes"}
METRIC = re.compile(r"\b(?:whatart|nv)_[a-z_]+")
SERIES_SUFFIXES = ("_bucket", "_count", "_sum", "_total")

Doc = dict[str, Any]


def _k8s_documents() -> list[Doc]:
    return [doc for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _find(kind: str, name: str) -> Doc:
    matches = [doc for doc in _k8s_documents() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def _container(deployment: Doc) -> Doc:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _container_port(container: Doc, ref: int | str) -> int:
    """A probe's or Service's target port (a number or a port name) as the container's port number."""
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ref in ports or ref in ports.values(), f"{ref!r} is not a port of {container['name']}: {ports}"
    return ports.get(ref, ref)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda path: str(path.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    assert [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def test_kubernetes_documents_are_named() -> None:
    documents = _k8s_documents()
    assert documents
    for doc in documents:
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), doc


def test_triton_probes_its_http_port() -> None:
    container = _container(_find("Deployment", "whatart-triton"))
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert ready["path"] == "/v2/health/ready" and _container_port(container, ready["port"]) == 8000
    assert live["path"] == "/v2/health/live" and _container_port(container, live["port"]) == 8000


def _check_key_from_the_secret(container: Doc) -> None:
    """The container gets WHATART_TRITON_API_KEY from a key of a Secret in the manifests."""
    (variable,) = [var for var in container.get("env", []) if var["name"] == "WHATART_TRITON_API_KEY"]
    reference = variable["valueFrom"]["secretKeyRef"]
    secret = _find("Secret", reference["name"])
    assert reference["key"] in secret.get("stringData", {}) | secret.get("data", {})


def test_triton_and_the_service_share_the_key_triton_restricts_its_apis_with() -> None:
    """Everything but health and metadata needs the key: both get it from one Secret, and
    Triton (here and under KServe) takes it through $(VAR) expansion in its arguments."""
    flags = restriction_flags("$(WHATART_TRITON_API_KEY)")
    triton = _container(_find("Deployment", "whatart-triton"))
    assert set(flags) <= set(triton["args"])
    kserve = _find("InferenceService", "whatart-encoder")["spec"]["predictor"]["model"]
    assert set(flags) <= set(kserve["args"])
    for container in (triton, kserve, _container(_find("Deployment", "whatart-service"))):
        _check_key_from_the_secret(container)
    assert _find("Secret", "whatart-triton-api-key")["stringData"]["key"] == "", "no key of its own in the repository"


def test_hpa_scales_triton_on_the_adapter_metric() -> None:
    hpa = _find("HorizontalPodAutoscaler", "whatart-triton")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "whatart-triton")
    adapter = yaml.safe_load(_find("ConfigMap", "prometheus-adapter-whatart")["data"]["config.yaml"])
    defined = {rule["name"]["as"] for rule in adapter["rules"]}
    used = {metric["pods"]["metric"]["name"] for metric in hpa["spec"]["metrics"]}
    assert used == defined == {"triton_queue_time_us_per_request"}


def test_services_select_their_deployments_ports() -> None:
    deployments = [doc for doc in _k8s_documents() if doc["kind"] == "Deployment"]
    for service in (doc for doc in _k8s_documents() if doc["kind"] == "Service"):
        selector = service["spec"]["selector"].items()
        selected = [d for d in deployments if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {len(selected)} Deployments"
        for port in service["spec"]["ports"]:
            _container_port(_container(selected[0]), port["targetPort"])


def test_service_reaches_triton_grpc() -> None:
    container = _container(_find("Deployment", "whatart-service"))
    env = {var["name"]: var.get("value") for var in container["env"]}
    target = env["WHATART_TRITON_URL"]
    assert target.startswith("dns:///"), "a gRPC DNS target, so the channel sees every Triton pod"
    host, port = target.removeprefix("dns:///").split(":")
    headless = _find("Service", host)
    assert headless["spec"]["clusterIP"] == "None", "a headless Service resolves to the pods, not a virtual IP"
    service_port = next(p for p in headless["spec"]["ports"] if p["port"] == int(port))
    triton = _container(_find("Deployment", "whatart-triton"))
    assert int(port) == 8001 and _container_port(triton, service_port["targetPort"]) == 8001


def test_prometheus_scrapes_triton_and_service() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
               for job in config["scrape_configs"]}
    assert targets == {"triton": ["triton:8002"], "whatart": ["service:8080"]}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"])


def _panels() -> list[Doc]:
    """The dashboard's query panels (rows hold no queries)."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    nested = [child for panel in panels for child in panel.get("panels", [])]  # collapsed rows
    return [panel for panel in panels + nested if panel["type"] != "row"]


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert (dashboard["uid"], dashboard["schemaVersion"]) == ("whatart", 39)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert [row["title"] for row in dashboard["panels"] if row["type"] == "row"] == ["Retrieval service", "Triton"]
    for panel in _panels():
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"] and all(target.get("expr") for target in panel["targets"]), panel["title"]


def _exposed_names(url: str) -> set[str]:
    """Metric names of a Prometheus text exposition: `# TYPE` lines (present for prometheus_client
    metrics before their first observation) and sample names."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    return names | {re.split(r"[{\s]", line, maxsplit=1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def _is_exposed(name: str, exposed: set[str]) -> bool:
    # A query may name a family (`x`) or one of its series (`x_bucket`); a name such as
    # nv_inference_count is itself a family, so the suffix is only stripped as an alternative.
    bases = {name} | {name.removesuffix(suffix) for suffix in SERIES_SUFFIXES if name.endswith(suffix)}
    return any(base + suffix in exposed for base in bases for suffix in ("", *SERIES_SUFFIXES))


def test_dashboard_metrics_exist(triton: TritonEndpoints, service_url: str) -> None:
    exposed = _exposed_names(triton.metrics_url) | _exposed_names(f"{service_url}/metrics")
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in _panels() for target in panel["targets"]]
    queries += [variable["definition"] for variable in dashboard["templating"]["list"]]
    used = {name for query in queries for name in METRIC.findall(query)}
    missing = sorted(name for name in used - GPU_ONLY_METRICS if not _is_exposed(name, exposed))
    assert not missing, f"dashboard metrics not in the live exposition: {missing}"
