"""whatart's gRPC API (whatart.proto): Identify, IdentifyStream, health and reflection.

It runs in the same process and event loop as the REST API (started from its lifespan) and
answers from the same Identifier, so both APIs give the same results.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from whatart.retrieval_service.errors import DependencyUnavailable
from whatart.retrieval_service.identify.identifier import Identifier
from whatart.retrieval_service.images import ImageError
from whatart.retrieval_service.index.metadata import FILTER_FIELDS, FilterError, MetadataFilter
from whatart.retrieval_service.log_format import REQUEST_ID, safe_request_id
from whatart.retrieval_service.serving.access import PROTECTED_GRPC_PREFIX, authorised, refusal
from whatart.retrieval_service.serving.admission import Admission, Overloaded
from whatart.retrieval_service.serving.grpc_api import whatart_pb2, whatart_pb2_grpc
from whatart.retrieval_service.serving.grpc_api.shapes import to_message_shape
from whatart.retrieval_service.serving.observed import identify_observed
from whatart.retrieval_service.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME = whatart_pb2.DESCRIPTOR.services_by_name["Identifier"].full_name
RECEIVE_LIMIT_UPLOADS = 2
"""gRPC accepts messages up to this many times the upload limit (+ 1 MiB), so that an image
somewhat over the limit is refused on its own (a stream goes on); a larger message ends the
call with RESOURCE_EXHAUSTED, as gRPC does."""
HEALTH_CHECK_S = 2.0
GRPC_IDLE_CLOSE_MS = 5 * 60 * 1000
"""A client connection with no call for this long is closed (gRPC's own idle timeout)."""
CurrentIdentifier = Callable[[], Awaitable[Identifier]]
"""The identifier over the index version being served now (the REST app's reloader decides which)."""


class TokenCheck(grpc.aio.ServerInterceptor):
    """Calls of the Identifier service need the API token (access.py); health and reflection do not."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        header = dict(details.invocation_metadata or ()).get("authorization")
        if handler is None or not details.method.startswith(PROTECTED_GRPC_PREFIX) or authorised(header, self.token):
            return handler
        message = refusal(header)

        async def deny(_request, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        make = grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_unary_rpc_method_handler
        return make(deny, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)


class RequestRefused(Exception):
    """A request the service will not run; carries the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _metadata_filter(request: whatart_pb2.IdentifyRequest) -> MetadataFilter | None:
    """The request's filter (its fields that are set), validated; None when it has none."""
    given = {name: getattr(request.filter, name) for name in FILTER_FIELDS if request.filter.HasField(name)}
    try:
        return MetadataFilter.of(**given)
    except FilterError as error:
        raise RequestRefused(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None


class IdentifierService(whatart_pb2_grpc.IdentifierServicer):
    def __init__(self, current: CurrentIdentifier, admission: Admission, settings: Settings) -> None:
        self.current, self.admission, self.settings = current, admission, settings

    async def _answer(self, request: whatart_pb2.IdentifyRequest, request_id: str) -> whatart_pb2.IdentifyResponse:
        """The answer, or RequestRefused with the status and a message that names the problem
        (the caller holds its place in the admission; `request_id` is the request's, made safe)."""
        settings = self.settings
        REQUEST_ID.set(request_id)
        k = request.k or settings.default_k
        if not 1 <= k <= settings.max_k:
            raise RequestRefused(grpc.StatusCode.INVALID_ARGUMENT, f"k must be between 1 and {settings.max_k}, got {request.k}")
        if len(request.image) > settings.max_upload_bytes:
            raise RequestRefused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 f"the image is {len(request.image):,} bytes; the limit is {settings.max_upload_bytes:,}")
        where = _metadata_filter(request)
        identifier = await self.current()
        try:
            result = await identify_observed(identifier, request.image, k, "grpc", where, request.explain)
        except ImageError as error:
            raise RequestRefused(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        except DependencyUnavailable as error:
            log.warning("%s", error)
            raise RequestRefused(grpc.StatusCode.UNAVAILABLE, error.public_message) from None
        answer = to_message_shape(result.to_json(request.explain))
        return json_format.ParseDict({**answer, "request_id": request_id}, whatart_pb2.IdentifyResponse())

    async def Identify(self, request: whatart_pb2.IdentifyRequest, context: grpc.aio.ServicerContext) -> whatart_pb2.IdentifyResponse:
        try:
            with self.admission.admitted():
                return await self._answer(request, safe_request_id(request.request_id))
        except Overloaded as error:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        except RequestRefused as refused:
            await context.abort(refused.code, str(refused))

    async def IdentifyStream(
        self, requests: AsyncIterator[whatart_pb2.IdentifyRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[whatart_pb2.IdentifyResponse]:
        """Requests run as the admission gives the stream places (admission.py: streams take
        turns within their share); answers leave as they are ready, and a request that fails
        answers with `error` instead of ending (or stalling) the stream."""
        answers: asyncio.Queue[whatart_pb2.IdentifyResponse | None] = asyncio.Queue()
        running: set[asyncio.Task] = set()

        def answer_error(request_id: str, code: grpc.StatusCode, message: str) -> None:
            error = whatart_pb2.Error(code=code.value[0], message=message)
            answers.put_nowait(whatart_pb2.IdentifyResponse(request_id=request_id, error=error))

        async def one(request: whatart_pb2.IdentifyRequest) -> None:
            request_id = safe_request_id(request.request_id)
            try:
                answers.put_nowait(await self._answer(request, request_id))
            except RequestRefused as refused:
                answer_error(request_id, refused.code, str(refused))
            except Exception:
                log.exception("stream item %s failed", request_id)
                answer_error(request_id, grpc.StatusCode.INTERNAL, "the service failed on this image; its log has the cause")

        def finished(task: asyncio.Task) -> None:  # also runs for a task cancelled before it started
            running.discard(task)
            self.admission.release_stream_place()

        async def feed() -> None:
            async for request in requests:
                await self.admission.stream_place()
                task = asyncio.create_task(one(request))
                running.add(task)
                task.add_done_callback(finished)
            await asyncio.gather(*running)
            answers.put_nowait(None)

        feeder = asyncio.create_task(feed())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
            await feeder
        finally:
            # a client that leaves mid-stream: its pending items stop too
            for task in (feeder, *running):
                task.cancel()


async def _report_health(current: CurrentIdentifier, servicer: health.aio.HealthServicer) -> None:
    """SERVING while Triton serves the model, as /health says; checked every HEALTH_CHECK_S."""
    while True:
        identifier = await current()
        ready = await identifier.encoder.is_ready()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await servicer.set(name, status)
        await asyncio.sleep(HEALTH_CHECK_S)


class GrpcServer:
    """The running gRPC server and its health reporter."""

    def __init__(self, server: grpc.aio.Server, health_task: asyncio.Task) -> None:
        self.server, self.health_task = server, health_task

    @classmethod
    async def start(cls, current: CurrentIdentifier, admission: Admission, settings: Settings) -> GrpcServer:
        server = grpc.aio.server(
            interceptors=[TokenCheck(settings.api_token)],
            options=[("grpc.max_receive_message_length", RECEIVE_LIMIT_UPLOADS * settings.max_upload_bytes + 1024 * 1024),
                     ("grpc.max_connection_idle_ms", GRPC_IDLE_CLOSE_MS)],
        )
        whatart_pb2_grpc.add_IdentifierServicer_to_server(IdentifierService(current, admission, settings), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        address = f"{settings.host}:{settings.grpc_port}"
        taken = f"gRPC cannot listen on {address} (is the port taken?): choose another with WHATART_GRPC_PORT / --grpc-port"
        try:
            if server.add_insecure_port(address) == 0:
                raise OSError(taken)
        except RuntimeError:
            raise OSError(taken) from None
        await server.start()
        log.info("gRPC on %s (health, reflection)", address)
        return cls(server, asyncio.create_task(_report_health(current, health_servicer)))

    async def stop(self) -> None:
        self.health_task.cancel()
        await self.server.stop(grace=1.0)
