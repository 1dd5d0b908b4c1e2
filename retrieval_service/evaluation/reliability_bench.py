"""`whatart bench reliability`: bad inputs, injected faults and load, with what was lost.

The bench runs its own Triton and `whatart serve` (so it can kill them) over an existing
index, and prints one JSON document:
- inputs: named uploads (each accepted format and odd pixel mode, broken ones, extreme
  shapes and canvases) and the status and message each got;
- requests: what a careless or hostile HTTP client sends beyond images (hostile_requests.py);
- faults: Triton and the service each killed (SIGKILL) during `identify --batch`, and
  `whatart ingest` killed with SIGKILL, each followed by the documented
  recovery (rerun the same command); results lost and answered twice are counted;
- load: `whatart bench load` against the same service.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, PngImagePlugin
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.evaluation.hostile_requests import probe_requests
from whatart.retrieval_service.evaluation.load_bench import run_load
from whatart.retrieval_service.evaluation.service_bench import ServiceProcess, Whatart, batch_command, free_port, run_batch_command
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.metadata import Artwork
from whatart.retrieval_service.ingest.checkpoints import WORK_FOLDER
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.access_key import triton_api_key
from whatart.retrieval_service.triton.process import TritonConfig, TritonProcess

log = logging.getLogger(__name__)

BATCH_IMAGES = 60
KILL_AFTER_ANSWERS = 10
INGEST_WORKS = 48
INGEST_CHECKPOINT = 8
SOURCE_WORKS = 100
"""works the bench takes from its source: the batch and ingest parts use the first ones, the load part cycles through all"""


class FaultNotInjected(WhatartError):
    """A fault could not be injected or recovered from as planned; the message says which and why."""


class TooFewWorks(WhatartError):
    """The source is smaller than the bench's parts; the message says how many works it needs."""


def _encoded(picture: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, image_format, **options)
    return buffer.getvalue()


def named_inputs(painting: Path, max_upload_bytes: int) -> list[tuple[str, bytes]]:
    """What users and attackers send: a real painting in every accepted form, and broken files."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    with Image.open(painting) as opened:
        rgb = opened.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    jpeg = _encoded(rgb, "JPEG")
    return [
        ("JPEG", jpeg), ("PNG", _encoded(rgb, "PNG")), ("WebP", _encoded(rgb, "WEBP")),
        ("GIF (palette)", _encoded(rgb.convert("P"), "GIF")), ("TIFF", _encoded(rgb, "TIFF")), ("BMP", _encoded(rgb, "BMP")),
        ("HEIC", _encoded(rgb, "HEIF")), ("JPEG, EXIF rotated", _encoded(rgb, "JPEG", exif=exif)),
        ("JPEG, CMYK", _encoded(rgb.convert("CMYK"), "JPEG")), ("PNG, 16-bit grey", _encoded(
            Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257), "PNG")),
        ("PNG, alpha", _encoded(rgb.convert("RGBA"), "PNG")), ("PNG, grey", _encoded(rgb.convert("L"), "PNG")),
        ("truncated JPEG", jpeg[: len(jpeg) // 2]), ("JPEG header, garbage body", jpeg[:20] + noise.tobytes()),
        ("random bytes", noise.tobytes()), ("empty", b""), ("text", b"these are not the pixels you are looking for"),
        ("ICO (not accepted)", _encoded(rgb.resize((32, 32)), "ICO")), ("8x8 image", _encoded(rgb.resize((8, 8)), "PNG")),
        ("decompression bomb (20000x20000 PNG)", _encoded(Image.new("1", (20000, 20000)), "PNG")),
        ("PNG whose text chunk unpacks to 8 MB", _encoded(rgb.resize((64, 64)), "PNG", pnginfo=_text_bomb())),
        ("641x32 PNG (over 20:1)", _encoded(rgb.resize((641, 32)), "PNG")),
        ("32x100000 PNG (a strip)", _encoded(Image.new("RGB", (32, 100_000)), "PNG")),
        ("640x32 PNG (20:1, accepted)", _encoded(rgb.resize((640, 32)), "PNG")),
        ("200 KB RGBA PNG declaring 7000x7000 (49 MP)", _encoded(Image.new("RGBA", (7000, 7000), (200, 30, 30, 128)), "PNG")),
        ("over the upload limit", b"\xff\xd8" + bytes(max_upload_bytes)),
    ]


def _text_bomb() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * (8 << 20), zip=True)
    return info


def try_inputs(url: str, inputs: list[tuple[str, bytes]]) -> list[dict[str, object]]:
    rows = []
    for name, data in inputs:
        response = httpx.post(f"{url}/v1/identify", files={"image": ("upload", data)}, timeout=120)
        body = response.json()
        rows.append({"input": name, "status": response.status_code,
                     "answer": body["matches"][0]["id"] if response.status_code == 200 else body.get("detail")})
    return rows


def _batch_fault(service: ServiceProcess, files: list[Path], out: Path, kill: Callable[[], None],
                 restore: Callable[[], None]) -> dict[str, object]:
    """`identify --batch` with `kill` run once KILL_AFTER_ANSWERS answers are written, then
    `restore` and the same batch again; counts what was lost or answered twice."""
    command = batch_command(service.whatart, service.address.grpc, files, out)
    batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not out.exists() or out.read_text().count("\n") < KILL_AFTER_ANSWERS:
        if batch.poll() is not None or time.monotonic() > deadline:
            how = "ended" if batch.poll() is not None else "stalled"
            _, stderr = _ended(batch).communicate()
            raise FaultNotInjected(f"the batch {how} before {KILL_AFTER_ANSWERS} answers, so the fault could not be "
                                   f"injected: {stderr[-2000:] or 'it wrote nothing to stderr'}")
        time.sleep(0.05)
    kill()
    batch.communicate(timeout=300)
    written_before = out.read_text().count("\n")
    restore()
    report = run_batch_command(command)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    answered = [line["file"] for line in lines if "matches" in line]
    return {"images": len(files), "written_before_recovery": written_before, "rerun_answered": report["answered"],
            "errors": sum("error" in line for line in lines), "lost": len(set(map(str, files)) - set(answered)),
            "answered_twice": len(answered) - len(set(answered))}


def _ended(process: subprocess.Popen) -> subprocess.Popen:
    """`process`, killed if it still runs: a fault that could not be injected leaves no child behind."""
    if process.poll() is None:
        process.kill()
    return process


def _checkpoints(index: Path) -> int:
    """Checkpoint files an ingest into `index` has written so far (the glob of ingest's Checkpoints.paths)."""
    return len(list((index / WORK_FOLDER).glob("*/chunk-*[0-9].npz")))


def ingest_fault(whatart: Whatart, works: list[Artwork], work: Path, triton_url: str, model: str) -> dict[str, object]:
    """`whatart ingest` of `works` killed with SIGKILL after 2 checkpoints, then run again."""
    csv, index, first_log = work / "ingest.csv", work / "kill-index", work / "ingest-killed.log"
    csv.write_text("id,file\n" + "".join(f"{a.id},{a.image_path}\n" for a in works))
    command = [*whatart, "ingest", str(csv), "--index", str(index), "--triton-url", triton_url, "--model", model, "--no-progress"]
    environment = {**os.environ, "WHATART_INGEST_CHECKPOINT_EVERY": str(INGEST_CHECKPOINT)}
    with first_log.open("w") as stderr:
        first = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 300
    while _checkpoints(index) < 2:
        if first.poll() is not None or time.monotonic() > deadline:
            how = "ended" if first.poll() is not None else "stalled"
            _ended(first).wait()
            raise FaultNotInjected(f"the ingest of {csv} {how} before 2 checkpoints, so it could not be killed; its log: {first_log}")
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    checkpointed = _checkpoints(index) * INGEST_CHECKPOINT
    rerun = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    if rerun.returncode != 0:
        raise FaultNotInjected(f"the ingest rerun after the kill failed: {rerun.stderr[-2000:]}")
    gallery = Gallery.load(index)
    ids = [artwork.id for artwork in gallery.metadata.in_row_order()]
    gallery.close()
    expected = {a.id for a in works}
    return {"works": len(expected), "checkpointed_before_kill": checkpointed, "rerun_encoded": json.loads(rerun.stdout)["encoded"],
            "published": len(ids), "lost": len(expected - set(ids)), "twice": len(ids) - len(set(ids))}


def run_reliability(whatart: Whatart, artworks: list[Artwork], clients: int, seconds: float, settings: Settings) -> dict[str, object]:
    """The whole bench; its work folder (logs, batch results, the ingest's index) is removed
    on success and kept, with its path logged, when a part fails."""
    needed = max(BATCH_IMAGES, INGEST_WORKS)
    if len(artworks) < needed:
        raise TooFewWorks(f"the source has {len(artworks)} works; the reliability bench needs at least {needed} "
                          f"({BATCH_IMAGES} for the batch, {INGEST_WORKS} for the ingest): pass a larger source")
    paths = [Path(artwork.image_path) for artwork in artworks[:SOURCE_WORKS]]
    model_repository, index_dir = settings.model_repository, settings.index_dir
    gallery = Gallery.load(index_dir)
    model = gallery.manifest.model.name
    gallery.close()
    work = Path(tempfile.mkdtemp(prefix="whatart-reliability-"))
    config = TritonConfig(model_repository, free_port(), free_port(), free_port(), work_dir=work / "triton",
                          api_key=triton_api_key(settings))
    triton = TritonProcess(config, log_path=work / "triton.log")
    triton_url = f"127.0.0.1:{config.grpc_port}"
    service = ServiceProcess(whatart, index_dir, triton_url, "cascade", log_file=work / "service.log")
    try:
        triton.start()
        service.start()
        url = service.address.url
        figures: dict[str, object] = {
            "inputs": try_inputs(url, named_inputs(paths[0], settings.max_upload_bytes)),
            "requests": probe_requests(url, settings.max_upload_bytes, settings.request_header_timeout_s,
                                       settings.request_body_timeout_s, paths[0].read_bytes()),
        }
        batch_dir = work / "batch"
        batch_dir.mkdir()
        files = paths[:BATCH_IMAGES]
        def triton_back() -> None:
            triton.start()
            service.wait_healthy()  # the service stayed up; /health is 200 once it reaches Triton again

        figures["faults"] = {
            "triton killed during identify --batch": _batch_fault(service, files, batch_dir / "triton.jsonl", triton.kill, triton_back),
            "service killed during identify --batch": _batch_fault(
                service, files, batch_dir / "service.jsonl", service.kill, service.start),
        }
        figures["faults"]["ingest killed (SIGKILL) and rerun"] = ingest_fault(whatart, artworks[:INGEST_WORKS], work, triton_url, model)
        figures["load"] = run_load(service.address.url, service.address.grpc, paths, clients, seconds)
    except BaseException:
        log.warning("kept %s for inspection", work)
        raise
    finally:
        service.stop()
        triton.stop()
    shutil.rmtree(work, ignore_errors=True)
    return figures
