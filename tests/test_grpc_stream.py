"""IdentifyStream when an item fails in a way no request check foresees.

The servicer runs for real; the identifier behind it is a stand-in, because no real part
fails on demand with an unexpected error (a real Triton or Milvus outage is covered as
UNAVAILABLE in test_triton_replicas and test_api)."""

from __future__ import annotations

import asyncio

import grpc
from whatart.retrieval_service.identify.answer import Identification
from whatart.retrieval_service.index.metadata import MetadataFilter
from whatart.retrieval_service.serving.admission import Admission
from whatart.retrieval_service.serving.grpc_api import IdentifierService, whatart_pb2
from whatart.retrieval_service.settings import Settings

BROKEN = b"this image breaks the identifier"


class FailingIdentifier:
    """Answers every image but BROKEN, which raises what no handler names."""

    async def identify(self, data: bytes, k: int, where: MetadataFilter | None = None, explain: bool = False) -> Identification:
        await asyncio.sleep(0.01)
        if data == BROKEN:
            raise RuntimeError("an unforeseen failure")
        return Identification(matches=[], in_gallery=False, confidence=0.0, model="stand-in", took_ms=1.0, timings_ms={},
                              decided_by="verified")


class OneGallery:
    async def current(self) -> FailingIdentifier:
        return FailingIdentifier()


async def _stream(images: list[bytes]) -> list[whatart_pb2.IdentifyResponse]:
    async def requests():
        for number, image in enumerate(images):
            yield whatart_pb2.IdentifyRequest(image=image, request_id=f"item-{number}")

    service = IdentifierService(OneGallery().current, Admission(limit=4, stream_limit=4), Settings())
    return [answer async for answer in service.IdentifyStream(requests(), context=None)]


def test_a_failing_item_answers_internal_and_the_stream_still_ends():
    answers = asyncio.run(asyncio.wait_for(_stream([b"a", BROKEN, b"b"]), timeout=10))

    by_id = {answer.request_id: answer for answer in answers}
    assert sorted(by_id) == ["item-0", "item-1", "item-2"]
    assert by_id["item-1"].error.code == grpc.StatusCode.INTERNAL.value[0]
    assert "log" in by_id["item-1"].error.message
    assert not by_id["item-0"].HasField("error") and by_id["item-0"].model == "stand-in"
    assert not by_id["item-2"].HasField("error")
