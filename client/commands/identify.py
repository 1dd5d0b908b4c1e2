"""`whatart identify`: image files over REST, or a resumable cataloguing job (`--batch`) over gRPC."""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from whatart.retrieval_service.index.metadata import FILTER_FIELDS, MetadataFilter
from whatart.retrieval_service.settings import Settings, SettingsError


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
                return {"file": str(path), **client.identify_file(path, args.k, where, explain=args.explain)}
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
        report = run_batch(files, args.out, client, args.k or 0, show_progress=not args.no_progress, where=_metadata_filter(args),
                           max_bytes=settings.max_upload_bytes, explain=args.explain)
    print(json.dumps({"files": report.files, "already_done": report.already_done, "answered": report.answered,
                      "failed": report.failed, "unavailable": report.unavailable, "seconds": round(report.seconds, 2),
                      "images_per_s": round(report.images_per_second, 1), "out": str(args.out)}))
    return 1 if report.unavailable else 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("identify", help="identify image files; one JSON line per file")
    p.add_argument("files", nargs="*", type=Path)
    p.add_argument("--batch", type=Path, metavar="DIR|LIST",
                   help="a cataloguing job over gRPC: every image of DIR (or listed in LIST), resumable, results to --out")
    p.add_argument("--out", type=Path, help="JSON-lines results of --batch (appended; a rerun skips what it answers)")
    p.add_argument("--grpc", help="gRPC address of the service for --batch (default 127.0.0.1:WHATART_GRPC_PORT)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--k", type=int, help="matches per image")
    p.add_argument("--explain", action="store_true", help="with each painting's kept correspondences (`explanation`)")
    for field in FILTER_FIELDS:
        p.add_argument(f"--{field}", help=f"identify among the artworks whose {field} is exactly this only")
    p.add_argument("--server", dest="server_url")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.set_defaults(handler=_identify)
