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

from whatart.retrieval_service.settings import SettingsError
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
INTRA_OP_THREADS = "intra_op_threads"
"""config parameter read by triton_cpu_model.py"""
TENSORRT_FP16 = """
optimization { execution_accelerators { gpu_execution_accelerator: [ {
  name: "tensorrt"
  parameters { key: "precision_mode" value: "FP16" }
  parameters { key: "max_workspace_size_bytes" value: "4294967296" }
  parameters { key: "trt_engine_cache_enable" value: "1" }
  parameters { key: "trt_engine_cache_path" value: "/tmp/whatart-trt-engines" }
} ] } }"""
"""onnxruntime backend's TensorRT execution accelerator: the first load of each batch
shape builds an engine (minutes); the cache keeps them across restarts of a container."""


@dataclass(frozen=True)
class ServingConfig:
    """How Triton runs the model: dynamic batching (requests wait up to max_queue_delay_us
    to be grouped), the instances that run the batches, and the accelerator."""

    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16)
    max_queue_delay_us: int = 500
    instances: int = 1
    threads_per_instance: int = 0
    """CPU flavour: onnxruntime intra-op threads of each instance (0: one per core)"""
    tensorrt_fp16: bool = True
    """GPU flavour: onnxruntime runs the graph through TensorRT in FP16 (engines cached)"""

    def __post_init__(self) -> None:
        if self.max_batch_size <= 0 or self.instances <= 0:
            raise SettingsError(f"max batch size and instances must be positive, got {self.max_batch_size} and {self.instances}")
        if self.max_queue_delay_us < 0 or self.threads_per_instance < 0:
            raise SettingsError(f"queue delay and threads must be 0 or more, got {self.max_queue_delay_us} and {self.threads_per_instance}")
        if any(size > self.max_batch_size for size in self.preferred_batch_sizes):
            raise SettingsError(f"preferred batch sizes {self.preferred_batch_sizes} exceed the max batch size {self.max_batch_size}")


DEFAULT_SERVING = ServingConfig()


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
    identity: ModelIdentity, input_size: int, flavour: Flavour, serving: ServingConfig, heads: HeadLabels | None = None
) -> str:
    """config.pbtxt text for one model; each head adds an output and a parameter with its
    labels as a JSON list (model_contract.head_output_name / head_labels_parameter)."""
    heads = heads or {}
    if flavour == "gpu":
        backend = 'backend: "onnxruntime"\ndefault_model_filename: "model.onnx"'
        if serving.tensorrt_fp16:
            backend += TENSORRT_FP16
        kind = "KIND_GPU"
    else:
        backend = 'backend: "python"'
        kind = "KIND_CPU"
    extra = {head_labels_parameter(task): json.dumps(list(names), ensure_ascii=False) for task, names in heads.items()}
    if flavour == "cpu" and serving.threads_per_instance:
        extra[INTRA_OP_THREADS] = str(serving.threads_per_instance)
    parameters = "\n".join(
        f"parameters {{ key: {pbtxt_string(key)} value: {{ string_value: {pbtxt_string(value)} }} }}"
        for key, value in {**identity.to_parameters(), **extra}.items()
    )
    outputs = ",\n".join(
        f'  {{ name: "{name}" data_type: TYPE_FP32 dims: [ {dim} ] }}'
        for name, dim in [(OUTPUT_NAME, identity.dim), *((head_output_name(t), len(names)) for t, names in heads.items())]
    )
    preferred = ", ".join(str(size) for size in serving.preferred_batch_sizes)
    return f"""name: "{identity.name}"
{backend}
max_batch_size: {serving.max_batch_size}
input [
  {{ name: "{INPUT_NAME}" data_type: TYPE_UINT8 dims: [ {input_size}, {input_size}, 3 ] }}
]
output [
{outputs}
]
instance_group [ {{ count: {serving.instances} kind: {kind} }} ]
dynamic_batching {{
  preferred_batch_size: [ {preferred} ]
  max_queue_delay_microseconds: {serving.max_queue_delay_us}
}}
{parameters}
"""


def write_model(
    repository: Path,
    identity: ModelIdentity,
    onnx_path: Path,
    input_size: int,
    flavour: Flavour,
    serving: ServingConfig = DEFAULT_SERVING,
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
    (staging / "config.pbtxt").write_text(render_config(identity, input_size, flavour, serving, heads))
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
