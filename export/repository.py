"""Write Triton model repository entries: encoders, heads models and the ensembles of both.

Two flavours of the same ONNX graph:
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
from whatart.retrieval_service.triton.model_contract import (
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
INSTALLED_GRAPH = "installed_graph"
"""config parameter read by triton_cpu_model.py: `module:attribute` naming the installed ONNX file"""
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


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model, as config.pbtxt declares it (batch axis left out)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


def pixels_input(input_size: int) -> TensorSpec:
    return TensorSpec(INPUT_NAME, "TYPE_UINT8", (input_size, input_size, 3))


def head_outputs(heads: HeadLabels) -> list[TensorSpec]:
    return [TensorSpec(head_output_name(task), "TYPE_FP32", (len(names),)) for task, names in heads.items()]


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


def _tensors(specs: list[TensorSpec]) -> str:
    return ",\n".join(
        f'  {{ name: "{spec.name}" data_type: {spec.data_type} dims: [ {", ".join(map(str, spec.dims))} ] }}' for spec in specs
    )


def _parameters(parameters: Mapping[str, str]) -> str:
    return "\n".join(
        f"parameters {{ key: {pbtxt_string(key)} value: {{ string_value: {pbtxt_string(value)} }} }}"
        for key, value in parameters.items()
    )


def head_label_parameters(heads: HeadLabels) -> dict[str, str]:
    """Each head's labels as a JSON list (model_contract.head_labels_parameter)."""
    return {head_labels_parameter(task): json.dumps(list(names), ensure_ascii=False) for task, names in heads.items()}


def render_config(
    name: str, flavour: Flavour, serving: ServingConfig, inputs: list[TensorSpec], outputs: list[TensorSpec],
    parameters: Mapping[str, str],
) -> str:
    """config.pbtxt of one ONNX model with dynamic batching: the onnxruntime backend on GPU
    (TensorRT FP16 when `serving` asks for it), the python backend on CPU."""
    if flavour == "gpu":
        backend = 'backend: "onnxruntime"\ndefault_model_filename: "model.onnx"'
        if serving.tensorrt_fp16:
            backend += TENSORRT_FP16
        kind = "KIND_GPU"
    else:
        backend = 'backend: "python"'
        kind = "KIND_CPU"
        if serving.threads_per_instance:
            parameters = {**parameters, INTRA_OP_THREADS: str(serving.threads_per_instance)}
    preferred = ", ".join(str(size) for size in serving.preferred_batch_sizes)
    return f"""name: "{name}"
{backend}
max_batch_size: {serving.max_batch_size}
input [
{_tensors(inputs)}
]
output [
{_tensors(outputs)}
]
instance_group [ {{ count: {serving.instances} kind: {kind} }} ]
dynamic_batching {{
  preferred_batch_size: [ {preferred} ]
  max_queue_delay_microseconds: {serving.max_queue_delay_us}
}}
{_parameters(parameters)}
"""


def render_encoder_config(
    identity: ModelIdentity, input_size: int, flavour: Flavour, serving: ServingConfig, installed_source: str | None = None,
) -> str:
    """An encoder: uint8 pixels in, the embedding out, its identity as parameters;
    `installed_source` (`module:attribute`) tells the CPU model.py where pip put the graph."""
    parameters = identity.to_parameters()
    if installed_source and flavour == "cpu":
        parameters[INSTALLED_GRAPH] = installed_source
    outputs = [TensorSpec(OUTPUT_NAME, "TYPE_FP32", (identity.dim,))]
    return render_config(identity.name, flavour, serving, [pixels_input(input_size)], outputs, parameters)


def render_ensemble_config(
    name: str, identity: ModelIdentity, input_size: int, serving: ServingConfig, encoder: str, heads_model: str,
    heads: HeadLabels,
) -> str:
    """A Triton ensemble: pixels -> `encoder` -> embedding -> `heads_model` -> probabilities,
    one request for the caller. It carries the encoder's identity and the heads' labels, so
    the service reads it exactly as it reads a bare encoder."""
    outputs = [TensorSpec(OUTPUT_NAME, "TYPE_FP32", (identity.dim,)), *head_outputs(heads)]
    head_maps = "\n".join(f'      output_map {{ key: "{o.name}" value: "{o.name}" }}' for o in head_outputs(heads))
    parameters = {**identity.to_parameters(), **head_label_parameters(heads)}
    return f"""name: "{name}"
platform: "ensemble"
max_batch_size: {serving.max_batch_size}
input [
{_tensors([pixels_input(input_size)])}
]
output [
{_tensors(outputs)}
]
ensemble_scheduling {{
  step [
    {{
      model_name: "{encoder}"
      model_version: -1
      input_map {{ key: "{INPUT_NAME}" value: "{INPUT_NAME}" }}
      output_map {{ key: "{OUTPUT_NAME}" value: "{OUTPUT_NAME}" }}
    }},
    {{
      model_name: "{heads_model}"
      model_version: -1
      input_map {{ key: "{OUTPUT_NAME}" value: "{OUTPUT_NAME}" }}
{head_maps}
    }}
  ]
}}
{_parameters(parameters)}
"""


@dataclass(frozen=True)
class Graph:
    """The ONNX file a model runs. `installed`: a file a package installed, whose licence
    allows no copies: the GPU flavour links to it and the CPU flavour's model.py opens it
    where it is (INSTALLED_GRAPH); otherwise the file is ours and copied into the model."""

    path: Path
    installed: bool = False


def write_model(repository: Path, name: str, config: str, flavour: Flavour, graph: Graph | None) -> Path:
    """Install the model under repository/<name>/, replacing any previous version whole:
    it is assembled beside the target and swapped in, so Triton never sees half a model.
    `graph` None: a model without a file of its own (an ensemble)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    repository.mkdir(parents=True, exist_ok=True)
    target = repository / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=repository))
    version = staging / "1"
    version.mkdir()
    if graph is not None:
        if flavour == "cpu":
            shutil.copyfile(CPU_MODEL_TEMPLATE, version / "model.py")
        if not graph.installed:
            shutil.copyfile(graph.path, version / "model.onnx")
        elif flavour == "gpu":
            (version / "model.onnx").symlink_to(graph.path.resolve())
    (staging / "config.pbtxt").write_text(config)
    staging.chmod(0o755)
    if target.exists():
        retired = target.with_name(f".{name}-retired")
        shutil.rmtree(retired, ignore_errors=True)
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired)
    else:
        staging.rename(target)
    return target
