"""torch -> ONNX with a dynamic batch axis, and a parity check against torch."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.triton.model_contract import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
"""Max absolute difference allowed between torch and ONNX embeddings (unit vectors)."""


class ParityError(WhatartError):
    """The ONNX graph does not reproduce the torch model."""


def export_onnx(model: torch.nn.Module, input_size: int, path: Path) -> None:
    """Write `model` (pixels -> embedding) as ONNX with the batch axis left dynamic."""
    example = torch.zeros(2, input_size, input_size, 3, dtype=torch.uint8)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter deprecation chatter, not actionable here
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, OUTPUT_NAME)},
            opset_version=17,
            dynamo=False,
        )


def check_parity(model: torch.nn.Module, onnx_path: Path, input_size: int, batch_size: int = 3) -> float:
    """Run the same random uint8 batch through torch and onnxruntime; return the embeddings'
    max |difference|, or raise if it exceeds the tolerance."""
    pixels = np.random.default_rng(0).integers(0, 256, (batch_size, input_size, input_size, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = model(torch.from_numpy(pixels)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: pixels})
    max_abs_diff = float(np.abs(expected - actual).max())
    if max_abs_diff > PARITY_TOLERANCE:
        raise ParityError(
            f"the ONNX embedding differs from torch by {max_abs_diff:.2e} (tolerance {PARITY_TOLERANCE:.0e}) on a batch of {batch_size}"
        )
    return max_abs_diff
