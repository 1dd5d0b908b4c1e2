"""An image too big for the service inside a stream or a batch job: it gets its own error,
and every other image of the job is still answered (real service, real Triton, gRPC)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from whatart.retrieval_service.serving.grpc_api import whatart_pb2, whatart_pb2_grpc

from tests.helpers import ServiceEndpoints, json_lines, run_cli, served

LIMIT = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def small_uploads(demo_index: Path, triton) -> Iterator[ServiceEndpoints]:
    with served(demo_index, triton.grpc_url, env={"WHATART_MAX_UPLOAD_BYTES": str(LIMIT)}) as service:
        yield service


def _oversized(path: Path, size: int) -> bytes:
    """A real JPEG padded after its end: over the limit however its pixels would decode."""
    data = path.read_bytes()
    return data + b"\0" * (size - len(data))


def test_an_item_over_the_limit_is_refused_alone_and_the_stream_goes_on(small_uploads: ServiceEndpoints,
                                                                         met_images: list[Path]) -> None:
    images = [met_images[0].read_bytes(), _oversized(met_images[1], int(1.75 * LIMIT)), met_images[2].read_bytes()]
    requests = (whatart_pb2.IdentifyRequest(image=image, k=1, request_id=f"item-{n}") for n, image in enumerate(images))
    with grpc.insecure_channel(small_uploads.grpc, options=[("grpc.max_send_message_length", 8 * LIMIT)]) as channel:
        answers = {a.request_id: a for a in whatart_pb2_grpc.IdentifierStub(channel).IdentifyStream(requests, timeout=120)}
    assert sorted(answers) == ["item-0", "item-1", "item-2"]
    assert answers["item-1"].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert f"the limit is {LIMIT:,}" in answers["item-1"].error.message
    assert answers["item-0"].matches[0].id == f"met-{met_images[0].stem}"
    assert answers["item-2"].matches[0].id == f"met-{met_images[2].stem}"


def test_a_batch_with_a_file_over_the_limit_finishes_and_a_rerun_has_nothing_left(small_uploads: ServiceEndpoints,
                                                                                    met_images: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in met_images[:4]:
        shutil.copy(path, folder / path.name)
    (folder / "huge.jpg").write_bytes(_oversized(met_images[4], 4 * LIMIT))  # over gRPC's own message limit too
    out = tmp_path / "results.jsonl"
    env = {**os.environ, "WHATART_MAX_UPLOAD_BYTES": str(LIMIT)}
    args = ("identify", "--batch", str(folder), "--out", str(out), "--grpc", small_uploads.grpc, "--no-progress")
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["files"], report["answered"], report["failed"]) == (5, 4, 1)
    by_file = {Path(line["file"]).name: line for line in json_lines(out.read_text())}
    assert f"{4 * LIMIT:,} bytes" in by_file["huge.jpg"]["error"] and "WHATART_MAX_UPLOAD_BYTES" in by_file["huge.jpg"]["error"]
    assert all(by_file[p.name]["matches"][0]["id"] == f"met-{p.stem}" for p in met_images[:4])

    second = run_cli(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["already_done"] == 5
