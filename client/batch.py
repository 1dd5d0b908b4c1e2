"""`whatart identify --batch DIR|LIST --out results.jsonl`: a cataloguing job over gRPC.

All images go through one IdentifyStream, so the service keeps many of them in flight (and
Triton's dynamic batcher fills its batches). Each answer is appended to the JSON-lines file
as it arrives, with the image's path, and flushed: a killed job loses nothing already
written, and running it again skips every file the output already answers (a line torn by
the kill is cut off first), so no image is answered twice. Images refused because Triton
was unavailable are not written: the next run asks again. A file over the upload limit is
not sent (it could end the stream for every image still in it): it gets its error line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from tqdm import tqdm
from whatart.client.grpc_client import WhatartGrpcClient
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.index.metadata import MetadataFilter
from whatart.retrieval_service.settings import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp", ".heic", ".heif"}


class BatchError(WhatartError):
    """The batch cannot start; the message says what is wrong with its input or output."""


@dataclass(frozen=True)
class BatchReport:
    files: int
    already_done: int
    answered: int
    failed: int
    """refused for good (not an image, unreadable): written with their error"""
    unavailable: int
    """not answered because Triton was unavailable: not written, so a rerun asks again"""
    seconds: float

    @property
    def images_per_second(self) -> float:
        return (self.answered + self.failed) / self.seconds if self.seconds > 0 else 0.0


def batch_files(spec: Path) -> list[Path]:
    """The images of a folder (recursively, sorted) or the paths listed in a text file (one per line)."""
    if spec.is_dir():
        files = sorted(p for p in spec.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif spec.is_file():
        lines = [line.strip() for line in spec.read_text(encoding="utf-8").splitlines()]
        files = [(spec.parent / line) for line in lines if line and not line.startswith("#")]
    else:
        raise BatchError(f"{spec} is neither a folder of images nor a file listing them")
    if not files:
        raise BatchError(f"{spec} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def answered_files(out: Path) -> set[str]:
    """Files the output already answers; a last line without its newline (a killed run) is cut off."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with out.open("r+b") as handle:
            handle.truncate(len(complete))
    try:
        return {json.loads(line)["file"] for line in complete.decode("utf-8").splitlines() if line.strip()}
    except (ValueError, KeyError) as error:
        raise BatchError(f"{out} is not a whatart results file ({error}): choose another --out") from None


def run_batch(files: list[Path], out: Path, client: WhatartGrpcClient, k: int, show_progress: bool = True,
              where: MetadataFilter | None = None, max_bytes: int = Settings.max_upload_bytes, explain: bool = False) -> BatchReport:
    """`max_bytes`: files larger than this are answered here with an error, never sent
    (the service's WHATART_MAX_UPLOAD_BYTES; the client reads the same setting)."""
    started = time.perf_counter()
    done = answered_files(out)
    pending = [path for path in files if str(path) not in done]
    progress = tqdm(total=len(files), initial=len(files) - len(pending), unit="img", desc="identify", disable=not show_progress)

    def requests() -> Iterator[tuple[str, bytes]]:
        for position, path in enumerate(pending):
            data = b""  # for a file not sent: the service refuses it, and the reason is recorded below
            try:
                size = path.stat().st_size
                if size > max_bytes:
                    unreadable[str(position)] = (f"{path} is {size:,} bytes; the service accepts images of up to {max_bytes:,} "
                                                 "(WHATART_MAX_UPLOAD_BYTES)")
                else:
                    data = path.read_bytes()
            except OSError as error:
                unreadable[str(position)] = f"cannot read {path}: {error.strerror}"
            yield str(position), data

    unreadable: dict[str, str] = {}
    answered = failed = retry = 0
    with out.open("a", encoding="utf-8") as handle:
        try:
            for answer in client.identify_stream(requests(), k, where, explain):
                position = answer.pop("request_id")
                path = pending[int(position)]
                if "error" in answer and answer["error"]["code"] == grpc.StatusCode.UNAVAILABLE.value[0]:
                    retry += 1  # not written: the next run asks again
                    continue
                if "error" in answer:
                    failed += 1
                    line = {"file": str(path), "error": unreadable.get(position, answer["error"]["message"])}
                else:
                    answered += 1
                    line = {"file": str(path), **answer}
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                handle.flush()
                progress.update()
            os.fsync(handle.fileno())
        except grpc.RpcError as error:
            raise BatchError(
                f"the service stopped answering ({error.code().name}: {error.details()}); the {answered + failed} answers "
                f"of this run are saved in {out}: run the same command again to go on"
            ) from None
        finally:
            progress.close()
    return BatchReport(len(files), len(files) - len(pending), answered, failed, retry, time.perf_counter() - started)
