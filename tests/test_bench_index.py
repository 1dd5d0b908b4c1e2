"""`whatart bench index` end to end: real embeddings of the demo gallery, fitted distractors,
distorted copies encoded through the session's Triton, JSON figures."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import TritonEndpoints
from tests.helpers import run_cli


def test_bench_index_prints_build_latency_memory_and_recall(demo_index: Path, triton: TritonEndpoints) -> None:
    result = run_cli("bench", "index", "--n", "3000", "--dim", "1536", "--queries", "40", "--index", str(demo_index),
                     "--triton-url", triton.grpc_url, "--index-kind", "ivf")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert (figures["n"], figures["dim"], figures["queries"]) == (3000, 1536, 40)
    assert figures["real_embeddings"] == 174 and figures["distractors"] == 2826
    index = figures["index"]
    assert index["factory"].startswith("UPCA") and ",IVF" in index["factory"]
    assert index["build_s"] > 0 and index["index_file_mb"] > 0 and index["index_rss_mb"] > 0
    assert 0 < index["batch1_p50_ms"] <= index["batch1_p99_ms"] and 0 < index["batch64_p50_ms"] <= index["batch64_p99_ms"]
    assert figures["exact"]["true_in_top5"] >= 0.6, "distorted copies of gallery works are found by exact search"
    assert figures["recall_at_1_vs_exact"] >= 0.8 and figures["recall_at_5_vs_exact"] >= figures["recall_at_1_vs_exact"]
    fit = figures["distractor_fit"]
    assert 0 < fit["distractor_to_nearest_real_median"] < 1 and 0 < fit["real_to_nearest_real_median"] < 1


def test_bench_index_refuses_fewer_dimensions_than_the_encoder(demo_index: Path, triton: TritonEndpoints) -> None:
    result = run_cli("bench", "index", "--n", "1000", "--dim", "256", "--queries", "5", "--index", str(demo_index),
                     "--triton-url", triton.grpc_url)
    assert result.returncode == 2 and "below the encoder's 512 dimensions" in result.stderr
