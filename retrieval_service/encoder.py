"""Client of the encoder that Triton serves: pixels in, embeddings out, over gRPC.

Asynchronous so that one process can keep many requests in flight; Triton's dynamic
batcher groups them into large batches on its side.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.model_contract import (
    HEAD_TASKS,
    INPUT_NAME,
    OUTPUT_NAME,
    ModelIdentity,
    head_labels_parameter,
    head_output_name,
)


class EncoderUnavailable(WhatartError):
    """Triton is unreachable, not ready, or does not serve the model; the message says which."""


@dataclass(frozen=True)
class ServedModel:
    """What Triton says about a model: its identity and the input size it expects."""

    identity: ModelIdentity
    input_size: int
    max_batch_size: int
    heads: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """task (style, genre) -> label names, for the classification heads the graph carries"""


UNREACHABLE = "StatusCode.UNAVAILABLE"
"""tritonclient's status when no connection could be made (Triton down or restarting)"""


class TritonEncoder:
    def __init__(self, url: str, model_name: str, timeout_s: float = 30.0, retry_waits_s: tuple[float, ...] = ()) -> None:
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.retry_waits_s = retry_waits_s
        """an unreachable Triton is tried again after each of these waits, then given up on"""
        self._client = grpcclient.InferenceServerClient(url)

    async def is_ready(self) -> bool:
        try:
            return await self._client.is_model_ready(self.model_name)
        except InferenceServerException:
            return False

    async def served_model(self) -> ServedModel:
        try:
            response = await self._client.get_model_config(self.model_name, as_json=True)
        except InferenceServerException as error:
            raise EncoderUnavailable(
                f"Triton at {self.url} does not serve model {self.model_name!r}: {error.message()}"
            ) from None
        config = response["config"]
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        height, width, _ = (int(d) for d in config["input"][0]["dims"])
        if height != width:
            raise EncoderUnavailable(f"model {self.model_name!r} expects a non-square input {height}x{width}")
        try:
            identity = ModelIdentity.from_parameters(parameters)
        except ValueError as error:
            raise EncoderUnavailable(f"model {self.model_name!r} at {self.url}: {error}") from None
        outputs = {output["name"] for output in config["output"]}
        heads = {
            task: tuple(json.loads(parameters[head_labels_parameter(task)]))
            for task in HEAD_TASKS
            if head_output_name(task) in outputs and head_labels_parameter(task) in parameters
        }
        return ServedModel(
            identity=identity,
            input_size=height,
            max_batch_size=int(config.get("max_batch_size", 0)),
            heads=heads,
        )

    async def encode(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> float32 [N, dim] unit vectors."""
        return (await self._infer(pixels, [OUTPUT_NAME]))[OUTPUT_NAME]

    async def encode_with_heads(self, pixels: np.ndarray, tasks: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Embeddings and, from the same Triton call, each task's class probabilities [N, labels]."""
        outputs = await self._infer(pixels, [OUTPUT_NAME, *(head_output_name(task) for task in tasks)])
        return outputs[OUTPUT_NAME], {task: outputs[head_output_name(task)] for task in tasks}

    async def _infer(self, pixels: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        infer_input = grpcclient.InferInput(INPUT_NAME, list(pixels.shape), "UINT8")
        infer_input.set_data_from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8))
        outputs = [grpcclient.InferRequestedOutput(name) for name in names]
        for attempt, wait_s in enumerate((*self.retry_waits_s, None), start=1):
            try:
                result = await self._client.infer(self.model_name, [infer_input], outputs=outputs, client_timeout=self.timeout_s)
                return {name: result.as_numpy(name) for name in names}
            except InferenceServerException as error:
                if wait_s is None or error.status() != UNREACHABLE:  # only a connection failure is worth another try
                    raise EncoderUnavailable(
                        f"Triton at {self.url} failed to encode ({attempt} attempt{'s' * (attempt > 1)}): {error.message()}"
                    ) from None
                await asyncio.sleep(wait_s)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def close(self) -> None:
        await self._client.close()


async def list_ready_models(url: str) -> list[str]:
    """Names of the models Triton at `url` reports ready."""
    client = grpcclient.InferenceServerClient(url)
    try:
        index = await client.get_model_repository_index(as_json=True)
    except InferenceServerException as error:
        raise EncoderUnavailable(f"cannot reach Triton at {url}: {error.message()}") from None
    finally:
        await client.close()
    return [m["name"] for m in index.get("models", []) if m.get("state") == "READY"]


async def resolve_model(url: str, model: str | None) -> str:
    """`model` when given, else the one model Triton at `url` serves (refusing to guess among several)."""
    if model is not None:
        return model
    ready = await list_ready_models(url)
    if len(ready) != 1:
        raise EncoderUnavailable(
            f"Triton at {url} serves {len(ready)} ready models ({', '.join(ready) or 'none'}): name one with --model"
        )
    return ready[0]
