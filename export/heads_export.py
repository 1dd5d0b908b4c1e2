"""Heads as a Triton model of their own, composed with the encoder by an ensemble.

The encoder's graph stays as it is (SSCD's may not be edited at all): `<encoder>-heads`
maps the 512/1280/2048-d embedding to each head's softmax probabilities, and the ensemble
`<encoder>-with-heads` runs pixels -> encoder -> heads in one request, the way Triton
composes pre- and post-processing. Needs torch (the heads are torch modules).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from whatart.export.heads import HeadSet
from whatart.export.onnx_export import PARITY_TOLERANCE, ParityError
from whatart.export.repository import (
    Flavour,
    Graph,
    ServingConfig,
    TensorSpec,
    head_outputs,
    render_config,
    render_ensemble_config,
    write_model,
)
from whatart.retrieval_service.triton.model_contract import OUTPUT_NAME, ModelIdentity, ensemble_name, head_output_name, heads_model_name


class HeadsGraph(nn.Module):
    """Embedding -> each head's probabilities, in the head set's order."""

    def __init__(self, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(heads)

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(nn.functional.softmax(head(embedding), dim=1) for head in self.heads.values())


def _export_heads_onnx(graph: HeadsGraph, dim: int, path: Path, outputs: list[str]) -> float:
    """Write the heads' ONNX (dynamic batch) and return its max |diff| against torch."""
    example = torch.from_numpy(np.random.default_rng(0).normal(size=(3, dim)).astype(np.float32))
    example = nn.functional.normalize(example, dim=1)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter deprecation chatter, not actionable here
        torch.onnx.export(graph, (example,), str(path), input_names=[OUTPUT_NAME], output_names=outputs,
                          dynamic_axes={name: {0: "batch"} for name in (OUTPUT_NAME, *outputs)}, opset_version=17, dynamo=False)
        expected = [t.numpy() for t in graph(example)]
    actual = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(outputs, {OUTPUT_NAME: example.numpy()})
    worst = max(float(np.abs(e - a).max()) for e, a in zip(expected, actual, strict=True))
    if worst > PARITY_TOLERANCE:
        raise ParityError(f"the heads' ONNX differs from torch by {worst:.2e} (tolerance {PARITY_TOLERANCE:.0e})")
    return worst


def export_heads(head_set: HeadSet, identity: ModelIdentity, input_size: int, repository: Path, flavour: Flavour,
                 serving: ServingConfig) -> Path:
    """Write `<encoder>-heads` and the ensemble `<encoder>-with-heads`; returns the ensemble's dir."""
    labels = {task: head.labels for task, head in head_set.heads.items()}
    graph = HeadsGraph({task: head.module for task, head in head_set.heads.items()}).eval()
    outputs = [head_output_name(task) for task in labels]
    heads_name = heads_model_name(identity.name)
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "heads.onnx"
        _export_heads_onnx(graph, identity.dim, onnx_path, outputs)
        # a small MLP: TensorRT engine builds would cost more than they save
        config = render_config(heads_name, flavour, replace(serving, tensorrt_fp16=False),
                               [TensorSpec(OUTPUT_NAME, "TYPE_FP32", (identity.dim,))], head_outputs(labels), {})
        write_model(repository, heads_name, config, flavour, Graph(onnx_path))
    ensemble = ensemble_name(identity.name)
    config = render_ensemble_config(ensemble, identity, input_size, serving, identity.name, heads_name, labels)
    return write_model(repository, ensemble, config, flavour, graph=None)
