"""Client of the encoder that Triton serves: pixels in, embeddings out, over gRPC.

Asynchronous so that one process can keep many requests in flight; Triton's dynamic
batcher groups them into large batches on its side. Given several Triton replicas, each
request goes to the one with the fewest requests in flight (in turn when equal), and a
replica that cannot be reached is passed over for a while: gRPC keeps one connection per
address, so a load balancer in front of replicas would pin a client to one of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException
from whatart.retrieval_service import metrics
from whatart.retrieval_service.errors import DependencyUnavailable
from whatart.retrieval_service.settings import Settings, replica_urls
from whatart.retrieval_service.triton.access_key import KeyHeader, triton_api_key
from whatart.retrieval_service.triton.model_contract import (
    HEAD_TASKS,
    INPUT_NAME,
    OUTPUT_NAME,
    ModelIdentity,
    ensemble_name,
    head_labels_parameter,
    head_output_name,
    heads_model_name,
)


class EncoderUnavailable(DependencyUnavailable):
    """Triton is unreachable, not ready, or does not serve the model; the message says which."""

    part = "the encoder (Triton)"


@dataclass(frozen=True)
class ServedModel:
    """What Triton says about a model: its identity and the input size it expects."""

    model_name: str
    """the Triton model to call: the encoder, or the ensemble of the encoder and its heads"""
    identity: ModelIdentity
    input_size: int
    max_batch_size: int
    heads: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """task (style, genre) -> label names, for the classification heads the graph carries"""

    def differences(self, other: ServedModel) -> list[str]:
        """What makes answers from the two differ (batch limits do not), in words."""
        found = self.identity.differences(other.identity)
        if self.input_size != other.input_size:
            found.append(f"input size: {self.input_size} != {other.input_size} px")
        tasks = sorted(task for task in {*self.heads, *other.heads} if self.heads.get(task) != other.heads.get(task))
        if tasks:
            found.append(f"the {', '.join(tasks)} head's labels differ")
        return found


UNREACHABLE = "StatusCode.UNAVAILABLE"
"""tritonclient's status when no connection could be made (Triton down or restarting)"""
REFUSED = "This protocol is restricted"
"""How Triton's answer to a call without the right key begins; its status is UNREACHABLE too."""
WRONG_KEY = "it refused whatart's key (set WHATART_TRITON_API_KEY to the key Triton was started with)"
PASSED_OVER_S = 2.0
"""How long a replica that could not be reached goes to the back of the queue."""
READY_TIMEOUT_S = 2.0
"""A readiness question a replica has not answered by then counts as not ready (a dropped
network must not hold /health)."""
MAX_MESSAGE_BYTES = 2**31 - 1
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # One URL may name many servers: `dns:///triton-headless:8001` (a Kubernetes headless
    # Service) resolves to every ready pod, and round robin sends each request to the next.
    ("grpc.lb_policy_name", "round_robin"),
]

log = logging.getLogger(__name__)


def triton_client(url: str, api_key: str, **options: object) -> grpcclient.InferenceServerClient:
    """An asyncio gRPC client of Triton at `url` that sends the key with every call."""
    client = grpcclient.InferenceServerClient(url, **options)
    client.register_plugin(KeyHeader(api_key))
    return client


def _refused(error: InferenceServerException) -> bool:
    return REFUSED in (error.message() or "")


def _why(error: InferenceServerException) -> str:
    """What Triton's error says, the key named when that is why it refused."""
    return WRONG_KEY if _refused(error) else error.message()


@dataclass
class _Replica:
    url: str
    client: grpcclient.InferenceServerClient
    in_flight: int = 0
    picked: int = 0
    unreachable_until: float = 0.0


class TritonEncoder:
    def __init__(self, url: str, model_name: str, timeout_s: float = 30.0, retry_waits_s: tuple[float, ...] = (), *,
                 api_key: str) -> None:
        """`url`: host:port of Triton's gRPC endpoint, or a comma-separated list of replicas;
        `api_key`: what Triton's restricted APIs ask for (access_key.py)."""
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.retry_waits_s = retry_waits_s
        """when no replica can be reached, all are tried again after each of these waits, then given up on"""
        self._replicas = [_Replica(replica, triton_client(replica, api_key, channel_args=CHANNEL_OPTIONS))
                          for replica in replica_urls(url)]

    @classmethod
    def from_settings(cls, settings: Settings, model_name: str) -> TritonEncoder:
        """The encoder the service, ingest and the tools use: the configured replicas, timeout
        and retry waits (a Triton restart costs a wait, not a failure)."""
        return cls(settings.triton_url, model_name, settings.triton_timeout_s, settings.triton_retry_waits_s,
                   api_key=triton_api_key(settings))

    def _by_preference(self) -> list[_Replica]:
        """Every replica once: reachable before recently unreachable, then fewest in flight, then least used."""
        now = time.monotonic()
        return sorted(self._replicas, key=lambda r: (r.unreachable_until > now, r.in_flight, r.picked))

    async def is_ready(self) -> bool:
        """Whether any replica serves the model."""
        return any((await self.readiness()).values())

    async def readiness(self) -> dict[str, bool]:
        """Each replica's readiness (asked together, each for at most READY_TIMEOUT_S), for /health."""
        answers = await asyncio.gather(*(self._ready(replica) for replica in self._replicas))
        return {replica.url: ready for replica, ready in zip(self._replicas, answers, strict=True)}

    async def _ready(self, replica: _Replica) -> bool:
        try:
            return await replica.client.is_model_ready(self.model_name, client_timeout=READY_TIMEOUT_S)
        except InferenceServerException:
            return False

    async def served_model(self) -> ServedModel:
        """What the reachable replicas serve, refusing replicas that disagree: their embeddings
        would not be comparable. Replicas that cannot be reached now are logged and skipped."""
        described: dict[str, ServedModel] = {}
        for replica in self._replicas:
            try:
                described[replica.url] = await self._describe(replica)
            except EncoderUnavailable as error:
                if len(self._replicas) == 1:
                    raise
                log.warning("Triton replica %s skipped: %s", replica.url, error)
        if not described:
            raise EncoderUnavailable(f"no Triton replica of {self.url} serves model {self.model_name!r}")
        (first_url, first), *others = described.items()
        for other_url, other in others:
            if differences := first.differences(other):
                raise EncoderUnavailable(
                    f"Triton replicas disagree about model {self.model_name!r} ({first_url} vs {other_url}: {'; '.join(differences)}); "
                    "serve one export on all of them"
                )
        return first

    async def _describe(self, replica: _Replica) -> ServedModel:
        try:
            response = await replica.client.get_model_config(self.model_name, as_json=True)
        except InferenceServerException as error:
            raise EncoderUnavailable(f"Triton at {replica.url}: {WRONG_KEY}" if _refused(error) else
                                     f"Triton at {replica.url} does not serve model {self.model_name!r}: {error.message()}") from None
        config = response["config"]
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        height, width, _ = (int(d) for d in config["input"][0]["dims"])
        if height != width:
            raise EncoderUnavailable(f"model {self.model_name!r} expects a non-square input {height}x{width}")
        try:
            identity = ModelIdentity.from_parameters(parameters)
        except ValueError as error:
            raise EncoderUnavailable(f"model {self.model_name!r} at {replica.url}: {error}") from None
        outputs = {output["name"] for output in config["output"]}
        heads = {
            task: tuple(json.loads(parameters[head_labels_parameter(task)]))
            for task in HEAD_TASKS
            if head_output_name(task) in outputs and head_labels_parameter(task) in parameters
        }
        return ServedModel(
            model_name=self.model_name,
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
        attempts = 0
        for wait_s in (*self.retry_waits_s, None):
            for replica in self._by_preference():
                attempts += 1
                try:
                    return await self._infer_at(replica, infer_input, outputs, names)
                except InferenceServerException as error:
                    if error.status() != UNREACHABLE or _refused(error):  # only a connection failure is worth another try
                        raise EncoderUnavailable(f"Triton at {replica.url} failed to encode: {_why(error)}") from None
                    replica.unreachable_until = time.monotonic() + PASSED_OVER_S
                    last = f"{replica.url}: {error.message()}"
            if wait_s is None:
                raise EncoderUnavailable(f"Triton at {self.url} failed to encode ({attempts} attempt{'s' * (attempts > 1)}): {last}")
            await asyncio.sleep(wait_s)
        raise AssertionError("unreachable: the last round returns or raises")

    async def _infer_at(self, replica: _Replica, infer_input: grpcclient.InferInput, outputs: list[grpcclient.InferRequestedOutput],
                        names: list[str]) -> dict[str, np.ndarray]:
        replica.in_flight += 1
        replica.picked += 1
        try:
            result = await replica.client.infer(self.model_name, [infer_input], outputs=outputs, client_timeout=self.timeout_s)
        except InferenceServerException:
            metrics.TRITON_REQUESTS.labels(replica.url, "error").inc()
            raise
        finally:
            replica.in_flight -= 1
        metrics.TRITON_REQUESTS.labels(replica.url, "ok").inc()
        return {name: result.as_numpy(name) for name in names}

    async def close(self) -> None:
        for replica in self._replicas:
            await replica.client.close()


async def model_states(url: str, api_key: str) -> dict[str, str]:
    """Each model of the repository Triton serves from, and its state (READY, LOADING,
    UNAVAILABLE; "" for one never loaded). `url`: a triton_url setting; its first replica
    answers (replicas serve one export, which the service checks)."""
    client = triton_client(replica_urls(url)[0], api_key)
    try:
        index = await client.get_model_repository_index(as_json=True)
    except InferenceServerException as error:
        raise EncoderUnavailable(f"cannot reach Triton at {url}: {_why(error)}") from None
    finally:
        await client.close()
    return {m["name"]: m.get("state", "") for m in index.get("models", [])}


def encoder_models(ready: list[str]) -> list[str]:
    """The encoders among the ready models: an encoder's heads model and its ensemble with
    them are parts of it, not encoders of their own."""
    names = set(ready)
    parts = {part for name in names for part in (heads_model_name(name), ensemble_name(name))}
    return sorted(names - parts)


async def served_as(url: str, encoder: str, api_key: str) -> str:
    """What identification calls for `encoder`: its ensemble with the style/genre heads when
    Triton at `url` serves (or is loading) one, else the encoder itself. An ensemble answers
    only requests for all its outputs, so embeddings alone (ingest) come from the encoder."""
    ensemble = ensemble_name(encoder)
    if (await model_states(url, api_key)).get(ensemble) in ("READY", "LOADING"):
        return ensemble
    log.info("no style/genre heads: Triton does not serve %s (`whatart train-head`, then `whatart export --head FILE`)", ensemble)
    return encoder


async def resolve_model(url: str, model: str | None, api_key: str) -> str:
    """`model` when given, else the one encoder Triton at `url` serves (refusing to guess among several)."""
    if model is not None:
        return model
    ready = encoder_models([name for name, state in (await model_states(url, api_key)).items() if state == "READY"])
    if len(ready) != 1:
        raise EncoderUnavailable(
            f"Triton at {url} serves {len(ready)} ready models ({', '.join(ready) or 'none'}): name one with --model"
        )
    return ready[0]
