"""Triton python-backend model: runs the exported model.onnx with onnxruntime on CPU.

On CPU hosts the only Triton available (the `tritonserver` binary inside the
nvidia-pytriton wheel) has the python backend alone, so this file stands in for the
onnxruntime backend. `whatart export --flavour cpu` copies it next to model.onnx, or, for a graph that a package
installed and whose licence allows no copies (SSCD), names that file by `module:attribute`
in the `installed_graph` parameter: it is opened where pip put it, after checking that it
is still the file the model was exported from (its sha256 is the model's identity).
Dynamic batching hands several requests to one `execute` call; they run as one batch.
Every output listed in config.pbtxt (the embedding, and the head probabilities when the
model has heads) is returned; Triton passes on the ones a request asked for.
"""

import hashlib
import importlib
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_names = [output["name"] for output in config["output"]]
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads sleep instead of spinning: the cores are shared with the retrieval
        # service, and spinning cost 8% of end-to-end throughput here (docs/performance.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        threads = int(parameters.get("intra_op_threads", "0"))
        if threads > 0:
            options.intra_op_num_threads = threads
        if "installed_graph" in parameters:
            path = _installed_graph(parameters["installed_graph"], parameters["whatart.weights_sha256"])
        else:
            path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.graph_input = self.session.get_inputs()[0].name

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        outputs = self.session.run(self.output_names, {self.graph_input: np.concatenate(batches)})
        splits = np.cumsum([len(batch) for batch in batches])[:-1]
        per_request = zip(*(np.split(output, splits) for output in outputs), strict=True)
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(name, chunk) for name, chunk in zip(self.output_names, chunks, strict=True)])
            for chunks in per_request
        ]


def _installed_graph(source, sha256):
    """The installed file `module:attribute` names, refused if it is not the exported one."""
    module_name, attribute = source.split(":")
    path = str(getattr(importlib.import_module(module_name), attribute))
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise pb_utils.TritonModelException(
            f"{path} is not the file this model was exported from (sha256 {digest.hexdigest()[:12]}, expected {sha256[:12]}): "
            "run `whatart export` again"
        )
    return path
