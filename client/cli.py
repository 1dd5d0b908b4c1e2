"""The one `whatart` command: global flags, the subcommands of client/commands/, settings from
the environment and flags, and one error line (exit 2) for anything a user can fix."""

from __future__ import annotations

import argparse
import logging
import sys

from whatart.client.commands import identify, index, measure, model, service
from whatart.retrieval_service import log_format
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.log_format import FORMATS
from whatart.retrieval_service.settings import Settings

FAMILIES = (model, index, service, identify, measure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whatart", description="Identify artworks from photos.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=FORMATS, help="text (default) or json lines with request ids (WHATART_LOG_FORMAT)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in FAMILIES:
        family.add_commands(commands)
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
