"""`whatart serve`, `ui` and `demo`: the running service, its Gradio page, and both started at once."""

from __future__ import annotations

import argparse
from pathlib import Path

from whatart.retrieval_service.settings import IDENTIFY_MODES, Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.retrieval_service.serving.server import serve

    serve(settings)
    return 0


def _ui(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.client.ui import launch

    launch(settings, share=args.share)
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from whatart.client.demo import run_demo

    return run_demo(settings, index_dir=args.index)


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("serve", help="serve the REST API (and gRPC) over an index")
    p.add_argument("--index", type=Path, dest="index_dir")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--grpc-port", type=int, help="gRPC API port (default 50051)")
    p.add_argument("--triton-url")
    p.add_argument("--mode", dest="identify_mode", choices=IDENTIFY_MODES,
                   help="cascade (default, WHATART_IDENTIFY_MODE): each stage only when the one before is unsure; "
                        "verified: every photo verified; global: one embedding, no verification (ablations)")
    p.set_defaults(handler=_serve)
    p = commands.add_parser("ui", help="the Gradio demo page")
    p.add_argument("--server", dest="server_url", help="whatart service URL (default http://127.0.0.1:8080)")
    p.add_argument("--host", dest="ui_host")
    p.add_argument("--port", type=int, dest="ui_port")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public share link (needs internet)")
    p.set_defaults(handler=_ui)
    p = commands.add_parser("demo", help="export, start Triton, ingest the Met demo gallery, serve the API and the UI")
    p.add_argument("--index", type=Path, default=Path(".whatart/demo-index"))
    p.set_defaults(handler=_demo)
