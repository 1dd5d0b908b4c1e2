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
from whatart.export.build import export_encoder
from whatart.export.encoders import ENCODERS, load_backbone
from whatart.export.packaged import WeightsUnavailable
from whatart.retrieval_service.triton.model_contract import INPUT_NAME, OUTPUT_NAME

from tests.helpers import json_lines, run_cli


@pytest.fixture(scope="module")
def resnet_cpu(tmp_path_factory: pytest.TempPathFactory):
    return export_encoder("resnet50", tmp_path_factory.mktemp("repo"), "cpu", random_seed=7)


def _embed(model_dir: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


def test_resnet50_export_matches_torch_and_has_a_dynamic_batch(resnet_cpu) -> None:
    assert resnet_cpu.parity_max_abs_diff < 1e-4
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


def _parsed(config_text: str):
    """config.pbtxt through Triton's own ModelConfig protobuf: a syntax or field error raises."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(config_text, model_config_pb2.ModelConfig())


def model_config_kind(name: str) -> int:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.ModelInstanceGroup.Kind.Value(name)


def test_gpu_flavour_uses_the_onnxruntime_backend_with_tensorrt_fp16(tmp_path: Path) -> None:
    result = export_encoder("efficientnet-lite0", tmp_path, "gpu", random_seed=7)  # the smaller export: only its config is checked
    config = _parsed((result.model_dir / "config.pbtxt").read_text())
    assert config.backend == "onnxruntime" and config.instance_group[0].kind == model_config_kind("KIND_GPU")
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert not (result.model_dir / "1" / "model.py").exists()
    plain = run_cli("export", "--encoder", "efficientnet-lite0", "--random-weights", "--flavour", "gpu", "--no-tensorrt",
                    "--model-repository", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr
    assert not _parsed((tmp_path / "plain" / "efficientnet-lite0" / "config.pbtxt").read_text()).HasField("optimization")


def test_cpu_serving_options_reach_the_config_and_bad_ones_are_refused(tmp_path: Path) -> None:
    result = run_cli("export", "--encoder", "efficientnet-lite0", "--random-weights", "--instances", "2", "--threads", "1",
                     "--preferred-batch-sizes", "4,8", "--queue-delay-us", "500", "--model-repository", str(tmp_path))
    assert result.returncode == 0, result.stderr
    config = _parsed((tmp_path / "efficientnet-lite0" / "config.pbtxt").read_text())
    assert config.instance_group[0].count == 2 and config.parameters["intra_op_threads"].string_value == "1"
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    refused = run_cli("export", "--encoder", "efficientnet-lite0", "--random-weights", "--preferred-batch-sizes", "8,128",
                      "--model-repository", str(tmp_path / "refused"))
    assert refused.returncode == 2 and "exceed the max batch size 64" in refused.stderr, refused.stderr


def test_weights_file_gives_the_same_model_as_its_source(resnet_cpu, tmp_path: Path) -> None:
    trunk = load_backbone(ENCODERS["resnet50"], weights=None, random_seed=7)
    weights = tmp_path / "resnet50.pth"
    torch.save(trunk.resnet.state_dict(), weights)
    from_file = export_encoder("resnet50", tmp_path / "repo", "cpu", weights=weights)
    assert from_file.identity.weights_sha256 == resnet_cpu.identity.weights_sha256


def test_pretrained_efficientnet_lite0_exports_with_parity(tmp_path: Path) -> None:
    result = export_encoder("efficientnet-lite0", tmp_path, "cpu")
    assert result.parity_max_abs_diff < 1e-4
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


def test_the_torch_free_list_of_torch_encoders_matches_the_encoders() -> None:
    """build.py names the torch-built encoders without importing torch; the two lists must agree."""
    from whatart.export.build import TORCH_ENCODERS

    assert TORCH_ENCODERS == tuple(ENCODERS)
