"""The gRPC API of a real `whatart serve` (the session's service over the demo gallery):
the same answers as REST, streaming with per-image errors, health and reflection."""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from whatart.client.grpc_client import WhatartGrpcClient
from whatart.retrieval_service.index.metadata import MetadataFilter
from whatart.retrieval_service.serving.grpc_api import generate

from tests.helpers import ServiceEndpoints

MET_ID = "met-{}"


def _met_id(path: Path) -> str:
    return MET_ID.format(path.stem)


def test_identify_gives_the_same_answer_as_rest(service: ServiceEndpoints, met_images: list[Path]) -> None:
    image = met_images[3].read_bytes()
    rest = httpx.post(f"{service.url}/v1/identify", files={"image": ("p.jpg", image)}, data={"k": "3"}, timeout=60).json()
    with WhatartGrpcClient(service.grpc) as client:
        answer = client.identify(image, k=3, request_id="mine-1")
    assert answer["request_id"] == "mine-1"
    assert answer["matches"][0]["id"] == _met_id(met_images[3])
    fields = ("id", "title", "artist", "score", "inliers", "image_url")
    assert [[m[f] for f in fields] for m in answer["matches"]] == [[m[f] for f in fields] for m in rest["matches"]]
    assert (answer["in_gallery"], answer["confidence"], answer["model"]) == (rest["in_gallery"], rest["confidence"], rest["model"])
    assert set(answer["timings_ms"]) == set(rest["timings_ms"])
    assert answer["decided_by"] == rest["decided_by"] == "embedding", "the painting itself: its embedding decides"


def test_identify_refuses_bad_input_with_a_status_that_names_it(service: ServiceEndpoints, met_images: list[Path]) -> None:
    with WhatartGrpcClient(service.grpc) as client:
        with pytest.raises(grpc.RpcError) as refused:
            client.identify(b"this is not an image")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "image" in refused.value.details().lower()
        with pytest.raises(grpc.RpcError) as bad_k:
            client.identify(met_images[0].read_bytes(), k=1000)
        assert bad_k.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "between 1 and 100" in bad_k.value.details()


def test_identify_stream_answers_every_request_and_keeps_going_after_a_bad_one(
    service: ServiceEndpoints, met_images: list[Path]
) -> None:
    requests = [(f"q{i}", path.read_bytes()) for i, path in enumerate(met_images[:6])]
    requests.insert(2, ("broken", b"\xff\xd8\xff\xe0 truncated"))
    with WhatartGrpcClient(service.grpc) as client:
        answers = {a["request_id"]: a for a in client.identify_stream(requests, k=2)}
    assert set(answers) == {request_id for request_id, _ in requests}
    assert answers["broken"]["error"]["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0] and answers["broken"]["matches"] == []
    for i, path in enumerate(met_images[:6]):
        assert "error" not in answers[f"q{i}"] and answers[f"q{i}"]["matches"][0]["id"] == _met_id(path)
        assert len(answers[f"q{i}"]["matches"]) == 2


def test_health_and_reflection_let_standard_tools_in(service: ServiceEndpoints) -> None:
    with grpc.insecure_channel(service.grpc) as channel:
        checker = health_pb2_grpc.HealthStub(channel)
        for name in ("", "whatart.v1.Identifier"):
            status = checker.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        database = ProtoReflectionDescriptorDatabase(channel)
        assert {"whatart.v1.Identifier", "grpc.health.v1.Health"} <= set(database.get_services())
        methods = database.FindFileContainingSymbol("whatart.v1.Identifier").service[0].method
        assert {m.name for m in methods} == {"Identify", "IdentifyStream"}


def test_generated_stubs_match_the_proto() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        generate.generate(Path(scratch))
        for name in ("whatart_pb2.py", "whatart_pb2_grpc.py"):
            assert (Path(scratch) / name).read_text() == (generate.HERE / name).read_text(), f"run `make proto`: {name} is stale"


def test_identify_can_be_restricted_by_metadata_fields(service: ServiceEndpoints, met_images: list[Path]) -> None:
    harvesters = next(path for path in met_images if path.stem == "435809")  # a work with a known artist
    image = harvesters.read_bytes()
    with WhatartGrpcClient(service.grpc) as client:
        artist = client.identify(image, k=1)["matches"][0]["artist"]
        same = client.identify(image, k=3, where=MetadataFilter(artist=artist))
        other = client.identify(image, k=3, where=MetadataFilter(genre="no such genre"))
        with pytest.raises(grpc.RpcError) as refused:
            client.identify(image, where=MetadataFilter(artist="tab\there"))
    assert artist and same["matches"][0]["id"] == _met_id(harvesters) and {m["artist"] for m in same["matches"]} == {artist}
    assert other["matches"] == [] and not other["in_gallery"]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "artist filter contains control characters" in refused.value.details()
