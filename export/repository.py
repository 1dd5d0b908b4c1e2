"""Write a Triton model repository entry: config.pbtxt, 1/model.onnx (+ 1/model.py on CPU).

Two flavours of the same model.onnx:
- ``gpu``: Triton's onnxruntime backend on KIND_GPU (the NGC container);
- ``cpu``: the python backend running onnxruntime on KIND_CPU (the tritonserver binary
  from nvidia-pytriton, the only Triton that installs on CPU-only hosts).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from whatart.retrieval_service.model_contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    ModelIdentity,
    head_labels_parameter,
    head_output_name,
)

Flavour = Literal["cpu", "gpu"]
FLAVOURS: tuple[Flavour, ...] = ("cpu", "gpu")

CPU_MODEL_TEMPLATE = Path(__file__).with_name("triton_cpu_model.py")


@dataclass(frozen=True)
class BatchingConfig:
    """Triton dynamic batching: requests wait up to max_queue_delay_us to be grouped."""

    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32)
    max_queue_delay_us: int = 2000
    instances: int = 1


DEFAULT_BATCHING = BatchingConfig()


HeadLabels = Mapping[str, tuple[str, ...]]
"""task -> label names, in the order of the head's probabilities."""


def pbtxt_string(value: str) -> str:
    """A protobuf text-format string literal that Triton parses back to exactly `value`:
    quotes and backslashes escaped, anything outside printable ASCII as octal UTF-8 bytes."""
    escaped = []
    for byte in value.encode():
        char = chr(byte)
        if char in '\\"':
            escaped.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            escaped.append(char)
        else:
            escaped.append(f"\\{byte:03o}")
    return '"' + "".join(escaped) + '"'


def render_config(
    identity: ModelIdentity, input_size: int, flavour: Flavour, batching: BatchingConfig, heads: HeadLabels | None = None
) -> str:
    """config.pbtxt text for one model; each head adds an output and a parameter with its
    labels as a JSON list (model_contract.head_output_name / head_labels_parameter)."""
    heads = heads or {}
    if flavour == "gpu":
        backend = 'backend: "onnxruntime"\ndefault_model_filename: "model.onnx"'
        kind = "KIND_GPU"
    else:
        backend = 'backend: "python"'
        kind = "KIND_CPU"
    labels = {head_labels_parameter(task): json.dumps(list(names), ensure_ascii=False) for task, names in heads.items()}
    parameters = "\n".join(
        f"parameters {{ key: {pbtxt_string(key)} value: {{ string_value: {pbtxt_string(value)} }} }}"
        for key, value in {**identity.to_parameters(), **labels}.items()
    )
    outputs = ",\n".join(
        f'  {{ name: "{name}" data_type: TYPE_FP32 dims: [ {dim} ] }}'
        for name, dim in [(OUTPUT_NAME, identity.dim), *((head_output_name(t), len(names)) for t, names in heads.items())]
    )
    preferred = ", ".join(str(size) for size in batching.preferred_batch_sizes)
    return f"""name: "{identity.name}"
{backend}
max_batch_size: {batching.max_batch_size}
input [
  {{ name: "{INPUT_NAME}" data_type: TYPE_UINT8 dims: [ {input_size}, {input_size}, 3 ] }}
]
output [
{outputs}
]
instance_group [ {{ count: {batching.instances} kind: {kind} }} ]
dynamic_batching {{
  preferred_batch_size: [ {preferred} ]
  max_queue_delay_microseconds: {batching.max_queue_delay_us}
}}
{parameters}
"""


def write_model(
    repository: Path,
    identity: ModelIdentity,
    onnx_path: Path,
    input_size: int,
    flavour: Flavour,
    batching: BatchingConfig = DEFAULT_BATCHING,
    heads: HeadLabels | None = None,
) -> Path:
    """Install the model under repository/<name>/, replacing any previous version whole:
    it is assembled beside the target and swapped in, so Triton never sees half a model."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    repository.mkdir(parents=True, exist_ok=True)
    target = repository / identity.name
    staging = Path(tempfile.mkdtemp(prefix=f".{identity.name}-", dir=repository))
    version = staging / "1"
    version.mkdir()
    shutil.copyfile(onnx_path, version / "model.onnx")
    if flavour == "cpu":
        shutil.copyfile(CPU_MODEL_TEMPLATE, version / "model.py")
    (staging / "config.pbtxt").write_text(render_config(identity, input_size, flavour, batching, heads))
    staging.chmod(0o755)
    if target.exists():
        retired = target.with_name(f".{identity.name}-retired")
        shutil.rmtree(retired, ignore_errors=True)
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired)
    else:
        staging.rename(target)
    return target
