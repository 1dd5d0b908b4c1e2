"""`whatart bench throughput`: how fast whatart identifies, against the seed-style loop, in one run.

Everything is measured one stage after another in the same process and on the same images,
so the ratios compare like with like on whatever else the machine was doing:
1. the seed-style loop (seed_loop.py): sequential decode -> eager torch at batch 1 -> FAISS;
2. the encoder alone: in-process onnxruntime (FP32, or a packaged graph as shipped), then
   the model Triton serves under concurrent requests; and this CPU's FP32 limit for the
   model (encoder_bench.py);
3. the service (service_bench.py): batch identification through `whatart identify --batch`
   (gRPC IdentifyStream), the same images over REST with many requests in flight, and
   single-image REST latency on an otherwise idle service.
The service runs in `--mode global` (one embedding, global search only), which is what the
seed loop does; its top-1 is reported next to the loop's so a fast wrong answer shows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from whatart.export.packaged import PACKAGED_ENCODERS
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.evaluation import encoder_bench, service_bench
from whatart.retrieval_service.evaluation.harness import sample
from whatart.retrieval_service.evaluation.index_bench import real_embeddings
from whatart.retrieval_service.evaluation.seed_loop import run_seed_loop
from whatart.retrieval_service.images import decode_image, to_model_input
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.ingest.sources import open_source

log = logging.getLogger(__name__)


class BenchInputError(WhatartError):
    """The bench cannot run on what it was given; the message says what is missing."""

ENCODER_PIXEL_IMAGES = 64
TRITON_LOADS = ((1, 16), (8, 8))
"""(images per request, requests in flight) the encoder is measured under through Triton:
what the service sends in global mode (one image per identification), and batched clients"""
ONNXRUNTIME_BATCHES = (1, 16)
MAX_PIXELS = 50_000_000
SAMPLE_SEED = 0
"""which images of the CSV are identified: the same ones on every run"""


@dataclass(frozen=True)
class ThroughputRequest:
    images_csv: str
    index_dir: Path
    triton_url: str
    model: str | None
    """Triton model; None: the index's"""
    model_repository: Path
    fp32_onnx: Path | None
    """None: the model repository's FP32 sibling of the model, <encoder>/1/model.onnx"""
    whatart: tuple[str, ...]
    """The command that runs the CLI, for the bench's own `whatart serve` and `identify --batch`."""
    n: int = 2000
    baseline_n: int = 300
    single_n: int = 200
    rest_in_flight: int = 16
    encoder_seconds: float = 20.0
    weights: Path | None = None
    random_seed: int | None = None


def _latency(latencies_ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(latencies_ms, 50)), 1), "p99_ms": round(float(np.percentile(latencies_ms, 99)), 1)}


def _answers_figures(answers: service_bench.Answers, expected: dict[str, str]) -> dict[str, object]:
    correct = sum(answers.top_ids.get(path) == artwork_id for path, artwork_id in expected.items())
    return {
        "images": answers.images,
        "seconds": round(answers.seconds, 2),
        "images_per_s": round(answers.images / answers.seconds, 1),
        **_latency(answers.latencies_ms),
        "top1": round(correct / len(expected), 4),
    }


def _check_enough(in_index: int, sampled: int, request: ThroughputRequest) -> None:
    """The encoder part batches the sampled images (up to the largest batch measured): with
    fewer it would have no batch to time."""
    needed = max(*ONNXRUNTIME_BATCHES, *(batch for batch, _ in TRITON_LOADS))
    if in_index < needed:
        raise BenchInputError(f"only {in_index} images of {request.images_csv} are in the index at {request.index_dir}; "
                              f"the bench needs at least {needed}: pass the CSV the index was built from")
    if sampled < needed:
        raise BenchInputError(f"--n {request.n} is below the {needed} images the encoder part batches: pass --n {needed} or more")


def _in_process_graph(request: ThroughputRequest, encoder: str, model: str) -> tuple[Path, str]:
    """The graph in-process onnxruntime is timed on, and its precision: --fp32-model; a packaged
    encoder's installed file (as shipped); else the repository's FP32 sibling of the model."""
    if request.fp32_onnx is not None:
        return request.fp32_onnx, "fp32"
    if encoder in PACKAGED_ENCODERS:
        return PACKAGED_ENCODERS[encoder].installed_file(), "as packaged"
    fp32_onnx = request.model_repository / model.removesuffix("-int8") / "1" / "model.onnx"
    if not fp32_onnx.is_file():
        raise BenchInputError(f"no FP32 ONNX model at {fp32_onnx}: export one (`whatart export` without --int8) or pass --fp32-model")
    return fp32_onnx, "fp32"


def run_throughput_bench(request: ThroughputRequest) -> dict[str, object]:
    gallery = Gallery.load(request.index_dir)
    identity = gallery.manifest.model
    gallery_ids = [artwork.id for artwork in gallery.metadata.in_row_order()]
    sharp = real_embeddings(gallery)
    gallery.close()
    model = request.model or identity.name
    graph, precision = _in_process_graph(request, identity.name, model)
    known = set(gallery_ids)
    artworks = [a for a in open_source(request.images_csv).artworks if a.id in known]
    queries = sample(artworks, request.n, SAMPLE_SEED)
    _check_enough(len(artworks), len(queries), request)
    paths = [Path(a.image_path) for a in queries]
    expected = {str(Path(a.image_path)): a.id for a in queries}
    figures: dict[str, object] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "gallery": {"index": str(request.index_dir), "artworks": len(gallery_ids), "model": identity.name, "dim": identity.dim},
    }

    log.info("1/3 seed-style loop over %d images", min(request.baseline_n, len(paths)))
    head_paths = paths[: request.baseline_n]
    loop = run_seed_loop(head_paths, sharp, gallery_ids, identity.name.removesuffix("-int8"), request.weights,
                         request.random_seed, identity.weights_sha256)
    figures["seed_loop"] = {
        "what": "sequential: PIL decode -> torchvision transforms -> eager torch ResNet50 batch 1 -> FAISS IndexFlatIP k=5 "
                f"over {len(gallery_ids)} x {identity.dim}",
        **_answers_figures(loop, {str(p): expected[str(p)] for p in head_paths}),
    }
    if not loop.same_weights:
        figures["seed_loop"].update(
            top1=None, weights=f"random, against {len(gallery_ids)} random 2048-d gallery vectors: speed only (the served "
                               f"{identity.name} cannot run in torchvision, so the loop's answers are not comparable)")

    log.info("2/3 encoder alone")
    size = asyncio.run(encoder_bench.served_input_size(request.triton_url, model))
    pixels = np.stack([to_model_input(decode_image(p.read_bytes(), MAX_PIXELS), size) for p in paths[:ENCODER_PIXEL_IMAGES]])
    onnxruntime = [encoder_bench.onnxruntime_rate(graph, pixels, batch, request.encoder_seconds)
                   for batch in ONNXRUNTIME_BATCHES]
    triton = [asyncio.run(encoder_bench.triton_rate(request.triton_url, model, pixels, batch, in_flight,
                                                    request.encoder_seconds)) for batch, in_flight in TRITON_LOADS]
    limit = encoder_bench.fp32_limit(graph, size)
    best_triton = max(rate.images_per_s for rate in triton)
    best_in_process = max(rate.images_per_s for rate in onnxruntime)
    figures["encoder"] = {
        "onnxruntime": {"graph": str(graph), "precision": precision, "rates": [asdict(rate) for rate in onnxruntime]},
        "triton": {"model": model, "loads": [asdict(rate) for rate in triton]},
        "triton_vs_onnxruntime": round(best_triton / best_in_process, 2),
        "fp32_limit": limit.to_dict(),
        "triton_fraction_of_fp32_limit": round(best_triton / limit.images_per_s, 2),
        "onnxruntime_fraction_of_fp32_limit": round(best_in_process / limit.images_per_s, 2),
    }

    log.info("3/3 the service (global mode): batch over gRPC, REST in flight, REST one at a time")
    with service_bench.running_service(request.whatart, request.index_dir, request.triton_url, "global") as service:
        stream = service_bench.grpc_batch(request.whatart, service, paths)
        rest = service_bench.rest_requests(service, paths, request.rest_in_flight)
        single_paths = paths[: request.single_n]
        single = service_bench.rest_requests(service, single_paths, 1)
    figures["batch_grpc_stream"] = {"what": "whatart identify --batch (one IdentifyStream); latency = took_ms in the service",
                                    **_answers_figures(stream, expected)}
    figures["rest_in_flight"] = {"in_flight": request.rest_in_flight, "what": "POST /v1/identify; latency seen by the client",
                                 **_answers_figures(rest, expected)}
    figures["rest_single"] = {"what": "POST /v1/identify one at a time, idle service; latency seen by the client",
                              **_answers_figures(single, {str(p): expected[str(p)] for p in single_paths})}
    loop_rate = loop.images / loop.seconds
    figures["speedup"] = {
        "batch_vs_seed_loop": round(stream.images / stream.seconds / loop_rate, 2),
        "grpc_stream_vs_rest_in_flight": round((stream.images / stream.seconds) / (rest.images / rest.seconds), 2),
    }
    return figures
