"""Client of the encoder that Triton serves: pixels in, embeddings out, over gRPC.

Asynchronous so that one process can keep many requests in flight; Triton's dynamic
batcher groups them into large batches on its side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.model_contract import INPUT_NAME, OUTPUT_NAME, ModelIdentity


class EncoderUnavailable(WhatartError):
    """Triton is unreachable, not ready, or does not serve the model; the message says which."""


@dataclass(frozen=True)
class ServedModel:
    """What Triton says about a model: its identity and the input size it expects."""

    identity: ModelIdentity
    input_size: int
    max_batch_size: int


class TritonEncoder:
    def __init__(self, url: str, model_name: str, timeout_s: float = 30.0) -> None:
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
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
        return ServedModel(
            identity=identity,
            input_size=height,
            max_batch_size=int(config.get("max_batch_size", 0)),
        )

    async def encode(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> float32 [N, dim] unit vectors."""
        infer_input = grpcclient.InferInput(INPUT_NAME, list(pixels.shape), "UINT8")
        infer_input.set_data_from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8))
        try:
            result = await self._client.infer(
                self.model_name,
                [infer_input],
                outputs=[grpcclient.InferRequestedOutput(OUTPUT_NAME)],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as error:
            raise EncoderUnavailable(f"Triton at {self.url} failed to encode: {error.message()}") from None
        return result.as_numpy(OUTPUT_NAME)

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
