"""Export: torch -> ONNX parity, dynamic batch, unit-norm output, both repository flavours.

ResNet50's ImageNet weights cannot be downloaded here, so its tests use seeded random
weights (shapes, parity and the weights-file path are what they check)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.helpers import json_lines, run_cli
from whatart.export.build import export_encoder
from whatart.export.encoders import ENCODERS, WeightsUnavailable, load_backbone
from whatart.retrieval_service.model_contract import INPUT_NAME, OUTPUT_NAME


@pytest.fixture(scope="module")
def resnet_cpu(tmp_path_factory: pytest.TempPathFactory):
    return export_encoder("resnet50", tmp_path_factory.mktemp("repo"), "cpu", random_seed=7)


def _embed(model_dir: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


def test_resnet50_export_matches_torch_and_has_a_dynamic_batch(resnet_cpu) -> None:
    assert resnet_cpu.parity.max_abs_diff < 1e-4
    assert resnet_cpu.identity.dim == 2048
    rng = np.random.default_rng(1)
    for batch_size in (1, 5):
        batch = rng.integers(0, 256, (batch_size, 224, 224, 3), dtype=np.uint8)
        embeddings = _embed(resnet_cpu.model_dir, batch)
        assert embeddings.shape == (batch_size, 2048)
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_cpu_flavour_is_a_python_backend_with_dynamic_batching(resnet_cpu) -> None:
    config = (resnet_cpu.model_dir / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "KIND_CPU" in config
    assert "dynamic_batching" in config and "max_batch_size: 64" in config
    assert (resnet_cpu.model_dir / "1" / "model.py").is_file()
    assert f'string_value: "{resnet_cpu.identity.weights_sha256}"' in config


def test_gpu_flavour_uses_the_onnxruntime_backend(tmp_path: Path) -> None:
    result = export_encoder("resnet50", tmp_path, "gpu", random_seed=7)
    config = (result.model_dir / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in config and "KIND_GPU" in config and "dynamic_batching" in config
    assert not (result.model_dir / "1" / "model.py").exists()


def test_weights_file_gives_the_same_model_as_its_source(resnet_cpu, tmp_path: Path) -> None:
    trunk = load_backbone(ENCODERS["resnet50"], weights=None, random_seed=7)
    weights = tmp_path / "resnet50.pth"
    torch.save(trunk.resnet.state_dict(), weights)
    from_file = export_encoder("resnet50", tmp_path / "repo", "cpu", weights=weights)
    assert from_file.identity.weights_sha256 == resnet_cpu.identity.weights_sha256


def test_pretrained_efficientnet_lite0_exports_with_parity(tmp_path: Path) -> None:
    result = export_encoder("efficientnet-lite0", tmp_path, "cpu")
    assert result.parity.max_abs_diff < 1e-4
    assert result.identity.dim == 1280
    again = export_encoder("efficientnet-lite0", tmp_path, "cpu")
    assert again.identity == result.identity, "the same weights must give the same identity"


def test_a_missing_or_wrong_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        load_backbone(ENCODERS["resnet50"], weights=tmp_path / "absent.pth", random_seed=None)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    result = run_cli("export", "--encoder", "resnet50", "--weights", str(wrong), "--model-repository", str(tmp_path))
    assert result.returncode == 2
    assert "does not fit resnet50" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_export_prints_a_json_summary(tmp_path: Path) -> None:
    result = run_cli("export", "--encoder", "resnet50", "--random-weights", "--flavour", "gpu", "--model-repository", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (summary,) = json_lines(result.stdout)
    assert summary["model"] == "resnet50" and summary["flavour"] == "gpu" and summary["dim"] == 2048
    assert (tmp_path / "resnet50" / "config.pbtxt").is_file()


def test_int8_export_is_a_model_of_its_own_close_to_fp32(tmp_path: Path) -> None:
    result = run_cli("export", "--encoder", "efficientnet-lite0", "--int8", "--calibration-images", "24",
                     "--model-repository", str(tmp_path))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["model"] == "efficientnet-lite0-int8" and summary["int8"]["images"] == 24
    assert summary["int8"]["mean_cosine"] >= 0.95, "INT8 embeddings stay close to FP32 on real paintings"
    graph = onnx.load(str(tmp_path / "efficientnet-lite0-int8" / "1" / "model.onnx"))
    assert sum(node.op_type == "QuantizeLinear" for node in graph.graph.node) > 10, "a QDQ graph"
    config = (tmp_path / "efficientnet-lite0-int8" / "config.pbtxt").read_text()
    assert 'string_value: "efficientnet-lite0-int8"' in config, "its own identity: an FP32 index refuses it"
    refused = run_cli("export", "--encoder", "efficientnet-lite0", "--int8", "--calibration-images", "0",
                      "--model-repository", str(tmp_path / "other"))
    assert refused.returncode == 2 and "--calibration-images must be positive" in refused.stderr
