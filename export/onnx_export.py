"""torch -> ONNX with a dynamic batch axis, and a parity check against torch."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.model_contract import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
"""Max absolute difference allowed between torch and ONNX embeddings (unit vectors)."""


class ParityError(WhatartError):
    """The ONNX graph does not reproduce the torch model."""


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    """Over every output (embedding and head probabilities)."""
    min_cosine: float
    batch_size: int


def export_onnx(model: torch.nn.Module, input_size: int, path: Path, output_names: tuple[str, ...] = (OUTPUT_NAME,)) -> None:
    """Write `model` as ONNX with the batch axis left dynamic; `output_names` names its
    outputs in the order the model returns them."""
    example = torch.zeros(2, input_size, input_size, 3, dtype=torch.uint8)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter deprecation chatter, not actionable here
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *output_names)},
            opset_version=17,
            dynamo=False,
        )


def check_parity(
    model: torch.nn.Module, onnx_path: Path, input_size: int, output_names: tuple[str, ...] = (OUTPUT_NAME,), batch_size: int = 3
) -> Parity:
    """Run the same random uint8 batch through torch and onnxruntime; raise if any output
    differs. `output_names` lists the outputs in the model's order, the embedding first."""
    pixels = np.random.default_rng(0).integers(0, 256, (batch_size, input_size, input_size, 3), dtype=np.uint8)
    with torch.no_grad():
        returned = model(torch.from_numpy(pixels))
    expected = [t.numpy() for t in (returned if isinstance(returned, tuple) else (returned,))]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    actual = session.run(list(output_names), {INPUT_NAME: pixels})
    diffs = {name: float(np.abs(e - a).max()) for name, e, a in zip(output_names, expected, actual, strict=True)}
    worst = max(diffs, key=diffs.__getitem__)
    parity = Parity(
        max_abs_diff=diffs[worst],
        min_cosine=float((expected[0] * actual[0]).sum(axis=1).min()),
        batch_size=batch_size,
    )
    if parity.max_abs_diff > PARITY_TOLERANCE:
        raise ParityError(
            f"ONNX output {worst!r} differs from torch by {parity.max_abs_diff:.2e} "
            f"(tolerance {PARITY_TOLERANCE:.0e}) on a batch of {batch_size}"
        )
    return parity
