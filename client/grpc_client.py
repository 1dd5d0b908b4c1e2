"""A Python client of whatart's gRPC API: answers as the same dicts the REST API returns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc
from google.protobuf import json_format
from whatart.retrieval_service.index.metadata import MetadataFilter
from whatart.retrieval_service.serving.access import grpc_metadata
from whatart.retrieval_service.serving.grpc_api import whatart_pb2, whatart_pb2_grpc
from whatart.retrieval_service.serving.grpc_api.shapes import to_rest_shape


def to_dict(response: whatart_pb2.IdentifyResponse) -> dict:
    """The REST API's JSON shape (an unverified match's `inliers` is None, as there)."""
    answer = json_format.MessageToDict(response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    for match in answer.get("matches", []) + [m for p in answer.get("paintings", []) for m in p.get("matches", [])]:
        match.setdefault("inliers", None)
    to_rest_shape(answer)
    if not response.HasField("error"):
        answer.pop("error", None)
    return answer


class WhatartGrpcClient:
    def __init__(self, address: str = "127.0.0.1:50051", timeout_s: float = 60.0, token: str = "") -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
        self.stub = whatart_pb2_grpc.IdentifierStub(self.channel)
        self.timeout_s = timeout_s
        self.metadata = grpc_metadata(token)

    def identify(self, image: bytes, k: int = 0, request_id: str = "", where: MetadataFilter | None = None,
                 explain: bool = False) -> dict:
        """One answer (among the artworks `where` keeps); a refused request raises
        grpc.RpcError (its code() and details() say why)."""
        request = whatart_pb2.IdentifyRequest(image=image, k=k, request_id=request_id, filter=_filter(where), explain=explain)
        return to_dict(self.stub.Identify(request, timeout=self.timeout_s, metadata=self.metadata))

    def identify_stream(self, images: Iterable[tuple[str, bytes]], k: int = 0, where: MetadataFilter | None = None,
                        explain: bool = False) -> Iterator[dict]:
        """(request id, image bytes) in, answers out as they are ready (match them by
        `request_id`); a failed image comes back with `error` set."""
        requests = (whatart_pb2.IdentifyRequest(image=image, k=k, request_id=request_id, filter=_filter(where), explain=explain)
                    for request_id, image in images)
        for response in self.stub.IdentifyStream(requests, metadata=self.metadata):
            yield to_dict(response)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> WhatartGrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _filter(where: MetadataFilter | None) -> whatart_pb2.Filter | None:
    return whatart_pb2.Filter(**where.conditions()) if where is not None else None
