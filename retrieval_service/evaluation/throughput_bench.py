"""`whatart bench throughput`: how fast whatart identifies, against the seed-style loop, in one run.

Everything is measured one stage after another in the same process and on the same images,
so the ratios compare like with like on whatever else the machine was doing:
1. the seed-style loop (seed_loop.py): sequential decode -> eager torch at batch 1 -> FAISS;
2. the encoder alone: in-process onnxruntime (FP32, or a packaged graph as shipped), then
   the model Triton serves under concurrent requests; and this CPU's FP32 limit for the
   model (encoder_bench.py);
3. the service (service_bench.py) as shipped (the cascade): batch identification through
   `whatart identify --batch` (gRPC IdentifyStream) and single-image REST latency on an
   otherwise idle service, each on the seed and the photo protocols' distorted queries (what
   users send, not the gallery's own files), with top-1 and the stage that decided.
The loop runs on the seed protocol's queries (the prior art's own test).
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from whatart.export.packaged import PACKAGED_ENCODERS
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.evaluation import encoder_bench, service_bench
from whatart.retrieval_service.evaluation.harness import RETRIEVAL_PROTOCOLS, sample, write_queries
from whatart.retrieval_service.evaluation.index_bench import real_embeddings
from whatart.retrieval_service.evaluation.seed_loop import run_seed_loop
from whatart.retrieval_service.images import decode_image, to_model_input
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.ingest.sources import open_source
from whatart.retrieval_service.triton.model_contract import ModelIdentity

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
"""which images of the CSV are identified, and their distortions: the same ones on every run"""


@dataclass(frozen=True)
class ThroughputRequest:
    images_csv: str
    index_dir: Path
    triton_url: str
    triton_api_key: str = field(repr=False)
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
    figures: dict[str, object] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "gallery": {"index": str(request.index_dir), "artworks": len(gallery_ids), "model": identity.name, "dim": identity.dim},
    }
    with tempfile.TemporaryDirectory(prefix="whatart-bench-queries-") as scratch:
        log.info("writing the %s queries of %d works", " and ".join(RETRIEVAL_PROTOCOLS), len(queries))
        expected = {protocol: write_queries(protocol, queries, SAMPLE_SEED, Path(scratch) / protocol) for protocol in RETRIEVAL_PROTOCOLS}
        loop = _seed_loop(request, figures, expected["seed"], sharp, gallery_ids, identity)
        _encoder(request, figures, [Path(path) for path in expected["seed"]], graph, precision, model)
        _service(request, figures, expected, loop.images / loop.seconds)
    return figures


def _seed_loop(request: ThroughputRequest, figures: dict, expected: dict[str, str], sharp: np.ndarray, gallery_ids: list[str],
               identity: ModelIdentity) -> service_bench.Answers:
    head = dict(list(expected.items())[: request.baseline_n])
    log.info("1/3 seed-style loop over %d seed-protocol queries", len(head))
    loop = run_seed_loop([Path(path) for path in head], sharp, gallery_ids, identity.name.removesuffix("-int8"), request.weights,
                         request.random_seed, identity.weights_sha256)
    figures["seed_loop"] = {
        "what": "sequential: PIL decode -> torchvision transforms -> eager torch ResNet50 batch 1 -> FAISS IndexFlatIP k=5 "
                f"over {len(gallery_ids)} x {identity.dim}",
        **_answers_figures(loop, head),
    }
    if not loop.same_weights:
        figures["seed_loop"].update(
            top1=None, weights=f"random, against {len(gallery_ids)} random 2048-d gallery vectors: speed only (the served "
                               f"{identity.name} cannot run in torchvision, so the loop's answers are not comparable)")
    return loop


def _encoder(request: ThroughputRequest, figures: dict, paths: list[Path], graph: Path, precision: str, model: str) -> None:
    log.info("2/3 encoder alone")
    size = asyncio.run(encoder_bench.served_input_size(request.triton_url, request.triton_api_key, model))
    pixels = np.stack([to_model_input(decode_image(p.read_bytes(), MAX_PIXELS), size) for p in paths[:ENCODER_PIXEL_IMAGES]])
    onnxruntime = [encoder_bench.onnxruntime_rate(graph, pixels, batch, request.encoder_seconds)
                   for batch in ONNXRUNTIME_BATCHES]
    triton = [asyncio.run(encoder_bench.triton_rate(request.triton_url, request.triton_api_key, model, pixels, batch, in_flight,
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


def _service(request: ThroughputRequest, figures: dict, expected: dict[str, dict[str, str]], loop_rate: float) -> None:
    log.info("3/3 the service (the cascade): batch over gRPC and REST one at a time, on each protocol's queries")
    figures["batch"], figures["rest_single"] = {}, {}
    with service_bench.running_service(request.whatart, request.index_dir, request.triton_url, "cascade") as process:
        service = process.address
        for protocol, truth in expected.items():
            stream = service_bench.grpc_batch(request.whatart, service, [Path(path) for path in truth])
            single_truth = dict(list(truth.items())[: request.single_n])
            single = service_bench.rest_requests(service, [Path(path) for path in single_truth], 1)
            batch = _answers_figures(stream, truth)
            figures["batch"][protocol] = {"what": "whatart identify --batch (one IdentifyStream); latency = took_ms in the service",
                                          **batch, "ratio_vs_seed_loop": round(batch["images_per_s"] / loop_rate, 2),
                                          "decided_by": stream.decided_by}
            figures["rest_single"][protocol] = {"what": "POST /v1/identify one at a time, idle service; latency seen by the client",
                                                **_answers_figures(single, single_truth)}
