"""The torch-built encoders (ResNet50, EfficientNet-Lite0): backbone -> ONNX -> parity check
-> optional INT8 -> Triton model. Needs the `export` extra (torch, torchvision, onnx)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from torch import nn
from whatart.export.encoders import ENCODERS, Embedder, EncoderSpec, load_backbone, weights_fingerprint
from whatart.export.onnx_export import check_parity, export_onnx
from whatart.export.quantize import Int8Agreement, Int8Calibration, calibration_pixels, quantize_int8
from whatart.export.repository import Flavour, Graph, ServingConfig, render_encoder_config, write_model
from whatart.retrieval_service.triton.model_contract import ModelIdentity


def encoder_identity(spec: EncoderSpec, trunk: nn.Module) -> ModelIdentity:
    """The identity of the embeddings; heads on top do not change it (an index stays valid)."""
    return ModelIdentity(
        name=spec.name,
        weights_sha256=weights_fingerprint(trunk),
        preprocessing=spec.preprocessing,
        dim=spec.feature_dim,
        pooling="avg",
    )


def export_torch_encoder(
    encoder: str, repository: Path, flavour: Flavour, weights: Path | None, random_seed: int | None,
    serving: ServingConfig, int8: Int8Calibration | None,
) -> tuple[ModelIdentity, Path, float, Int8Agreement | None]:
    """(identity, model dir, ONNX-vs-torch max |diff|, INT8 agreement); with `int8`, the
    statically quantised graph is installed instead, as the model `<encoder>-int8`."""
    spec = ENCODERS[encoder]
    trunk = load_backbone(spec, weights, random_seed)
    identity = encoder_identity(spec, trunk)
    model = Embedder(spec, trunk).eval()
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        export_onnx(model, spec.input_size, onnx_path)
        max_abs_diff = check_parity(model, onnx_path, spec.input_size)
        agreement = None
        if int8 is not None:
            int8_path = Path(scratch) / "model-int8.onnx"
            agreement = quantize_int8(onnx_path, int8_path, calibration_pixels(int8.source, int8.images, spec.input_size))
            onnx_path, identity = int8_path, replace(identity, name=f"{identity.name}-int8")
        config = render_encoder_config(identity, spec.input_size, flavour, serving)
        model_dir = write_model(repository, identity.name, config, flavour, Graph(onnx_path))
    return identity, model_dir, max_abs_diff, agreement
