"""`whatart export --int8`: static INT8 quantisation of the exported graph, calibrated on real
paintings.

QDQ format with **unsigned** activations and signed per-channel weights (U8S8): on this
CPU (AVX512-VNNI) that is what onnxruntime runs fast, about 3.5x FP32 for ResNet50, while
signed activations gained only 1.2x (../shared/docs/environment.md). The INT8 model is a
model of its own (`<encoder>-int8`, its own identity): its embeddings differ slightly from
FP32 ones, so an index built with one is never searched with the other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.images import ImageError, decode_image, to_model_input
from whatart.retrieval_service.ingest.sources import GallerySource
from whatart.retrieval_service.triton.model_contract import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 8
MAX_CALIBRATION_PIXELS = 50_000_000


class QuantizationError(WhatartError):
    """The model cannot be quantised as asked; the message says why."""


@dataclass(frozen=True)
class Int8Calibration:
    """What `--int8` calibrates on: the first `images` readable images of `source`."""

    source: GallerySource
    images: int = 200


@dataclass(frozen=True)
class Int8Agreement:
    """How close INT8 embeddings stay to FP32 ones on the calibration images."""

    images: int
    mean_cosine: float
    min_cosine: float


def calibration_pixels(source: GallerySource, count: int, input_size: int) -> np.ndarray:
    """uint8 [n, size, size, 3]: the first `count` readable images of `source`, as the model sees them."""
    pixels = []
    for artwork in source.artworks:
        try:
            image = decode_image(Path(artwork.image_path).read_bytes(), MAX_CALIBRATION_PIXELS)
        except (OSError, ImageError) as error:
            log.warning("calibration: skipped %s (%s)", artwork.id, error)
            continue
        pixels.append(to_model_input(image, input_size))
        if len(pixels) == count:
            break
    if not pixels:
        raise QuantizationError(f"no readable calibration image in {source.name}")
    return np.stack(pixels)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over fixed batches."""

    def __init__(self, pixels: np.ndarray) -> None:
        self._batches: Iterator[np.ndarray] = iter([pixels[i : i + CALIBRATION_BATCH] for i in range(0, len(pixels), CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_int8(fp32_path: Path, int8_path: Path, pixels: np.ndarray) -> Int8Agreement:
    """Write the INT8 graph of `fp32_path` to `int8_path`, calibrated on `pixels`, and measure
    its embeddings against FP32's on the same images."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # shape inference + graph optimisation first: measured 1.2-1.4x over FP32 with it, slower than FP32 without
    prepared = int8_path.with_name(f"{int8_path.stem}-prepared.onnx")
    quant_pre_process(str(fp32_path), str(prepared))
    quantize_static(
        str(prepared), str(int8_path), _Reader(pixels), quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
    )
    fp32, int8 = (_embed(path, pixels) for path in (fp32_path, int8_path))
    cosines = (fp32 * int8).sum(axis=1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(int8, axis=1))
    agreement = Int8Agreement(len(pixels), round(float(cosines.mean()), 4), round(float(cosines.min()), 4))
    log.info("INT8 calibrated on %d images: embedding cosine to FP32 mean %.4f, min %.4f",
             agreement.images, agreement.mean_cosine, agreement.min_cosine)
    return agreement


def _embed(path: Path, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: pixels[i : i + CALIBRATION_BATCH]})[0]
                           for i in range(0, len(pixels), CALIBRATION_BATCH)])
