"""Regenerate whatart_pb2.py / whatart_pb2_grpc.py from whatart.proto (`make proto`).

The generated modules are committed, so that installing whatart needs no protoc; a test
regenerates them into a temporary folder and fails when they differ from the committed ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "whatart.retrieval_service.serving.grpc_api"


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # the `test` extra (grpcio-tools), build time only

    code = protoc.main(["protoc", f"-I{HERE}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", str(HERE / "whatart.proto")])
    if code != 0:
        raise SystemExit(f"protoc failed on {HERE / 'whatart.proto'} (exit {code})")
    stubs = out_dir / "whatart_pb2_grpc.py"  # protoc writes a top-level import; make it a package one
    stubs.write_text(stubs.read_text().replace("import whatart_pb2 as", f"from {PACKAGE} import whatart_pb2 as"))


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
