"""One in-flight limit for unary calls and streams, with streams taking turns in their share.

The first tests run the admission on its own (the event loop, no service: what they check
is ordering, which a real service's timing would blur); the last runs the real service,
Triton and gRPC, with many streams and unary callers at once."""

from __future__ import annotations

import asyncio
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from whatart.client.grpc_client import WhatartGrpcClient
from whatart.retrieval_service.fair_slots import FairSlots
from whatart.retrieval_service.serving.admission import Admission, Overloaded

from tests.helpers import served


def test_waiters_are_served_in_arrival_order_and_a_cancelled_one_frees_its_turn():
    async def scenario() -> list[str]:
        slots, order = FairSlots(3), []
        assert slots.try_acquire(2)

        async def wants(name: str, weight: int) -> None:
            async with slots.held(weight):
                order.append(name)
                await asyncio.sleep(0.01)

        big = asyncio.create_task(wants("big", 3))  # waits: 2 of 3 in use
        await asyncio.sleep(0)
        small = asyncio.create_task(wants("small", 1))  # would fit now, but comes after big
        cancelled = asyncio.create_task(wants("cancelled", 1))
        await asyncio.sleep(0)
        assert order == [] and not slots.try_acquire(1)  # nobody jumps the queue
        cancelled.cancel()
        slots.release(2)
        await asyncio.gather(big, small, return_exceptions=True)
        assert slots.in_use == 0
        return order

    assert asyncio.run(scenario()) == ["big", "small"]


def test_streams_take_turns_within_their_share_and_unary_calls_keep_the_rest():
    async def scenario() -> tuple[list[str], int]:
        admission = Admission(limit=4, stream_limit=2)
        started: list[str] = []

        async def stream(name: str, items: int) -> None:  # like grpc_api: one place asked for at a time
            for _ in range(items):
                await admission.stream_place()
                started.append(name)
                asyncio.get_running_loop().call_later(0.02, admission.release_stream_place)

        streams = [asyncio.create_task(stream(name, 4)) for name in ("a", "b", "c")]
        await asyncio.sleep(0.005)
        assert admission.pending == 2  # the streams' share, however many streams there are
        with admission.admitted(), admission.admitted():  # unary callers get the other two...
            with pytest.raises(Overloaded):  # ...and the limit is one for all
                with admission.admitted():
                    pass
        await asyncio.gather(*streams)
        await asyncio.sleep(0.05)  # the last items finish
        return started, admission.pending

    started, pending = asyncio.run(scenario())
    assert pending == 0
    assert started[:2] == ["a", "a"]  # alone at first, a stream may use the whole share
    assert set(started[2:5]) == {"a", "b", "c"}  # then places go round: none waits for another's backlog
    assert sorted(started) == ["a"] * 4 + ["b"] * 4 + ["c"] * 4


def _in_flight(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10, follow_redirects=True).text
    return float(re.search(r"^whatart_identify_in_flight (\S+)$", text, re.M).group(1))


def test_many_streams_leave_unary_callers_room_and_never_pass_the_limit(demo_index: Path, triton, met_images: list[Path]):
    env = {"WHATART_MAX_PENDING": "4", "WHATART_MAX_STREAM_PENDING": "2"}
    images = [path.read_bytes() for path in met_images[:6]]
    with served(demo_index, triton.grpc_url, env=env) as service:
        done = threading.Event()
        peaks: list[float] = []

        def one_stream(number: int) -> list[dict]:
            with WhatartGrpcClient(service.grpc) as client:
                return list(client.identify_stream(((f"{number}-{i}", image) for i, image in enumerate(images)), k=1))

        def unary_caller() -> list[int]:
            statuses = []
            with httpx.Client(base_url=service.url, timeout=60) as client:
                while not done.is_set():
                    response = client.post("/v1/identify", files={"image": ("a.jpg", images[0])}, data={"k": "1"})
                    statuses.append(response.status_code)
            return statuses

        def watch() -> None:
            while not done.is_set():
                peaks.append(_in_flight(service.url))

        with ThreadPoolExecutor(12) as pool:
            streams = [pool.submit(one_stream, number) for number in range(8)]
            callers = [pool.submit(unary_caller) for _ in range(2)]
            watcher = pool.submit(watch)
            answers = [stream.result(timeout=600) for stream in streams]
            done.set()
            statuses = [status for caller in callers for status in caller.result(timeout=120)]
            watcher.result(timeout=60)

    assert all(len(answer) == len(images) and not any("error" in a for a in answer) for answer in answers)
    assert statuses and set(statuses) == {200}, statuses  # two callers never found the four places full
    assert max(peaks) <= 4
