"""Start and stop the real `tritonserver` binary on a CPU host.

The binary comes from the nvidia-pytriton wheel, which ships Triton 2.51 with the python
backend only. It needs a backend directory laid out the way Triton expects, a few library
paths, and the venv on PATH so the python-backend stub finds numpy and onnxruntime.
Every API but health and metadata is restricted to callers with whatart's key (access_key.py).
GPU hosts run the NGC container instead (see docker-compose.yml).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.triton.access_key import KEY_HEADER

log = logging.getLogger(__name__)


class TritonError(WhatartError):
    """Triton could not be started or did not become ready; the message says why."""


@dataclass(frozen=True)
class TritonConfig:
    model_repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    work_dir: Path = Path(".whatart/triton")
    log_verbose: int = 0
    models: tuple[str, ...] = ()
    """Load only these models (explicit mode); empty loads every model in the repository."""
    api_key: str = field(kw_only=True, repr=False)
    """What callers of the restricted APIs must send (access_key.py)."""


RESTRICTED_APIS = ("inference", "shared-memory", "model-config", "model-repository", "statistics", "trace", "logging")
"""Every Triton API but health (probes) and server/model metadata, over HTTP and gRPC alike:
model control, statistics, tracing, logging, shared memory, and inference past the service's
admission limit."""


def restriction_flags(api_key: str) -> list[str]:
    """tritonserver flags that refuse RESTRICTED_APIS to callers that do not send api_key (as
    header KEY_HEADER over HTTP, GRPC_KEY_HEADER over gRPC)."""
    value = f"{','.join(RESTRICTED_APIS)}:{KEY_HEADER}={api_key}"
    return [f"--http-restricted-api={value}", f"--grpc-restricted-protocol={value}"]


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError:
        raise TritonError(
            "the tritonserver binary is missing: install it with pip install 'whatart[triton]' "
            "(the nvidia-pytriton wheel), or run Triton's NGC container on a GPU host"
        ) from None
    return Path(pytriton.__file__).parent


def _backend_directory(pytriton_dir: Path, work_dir: Path) -> Path:
    """Assemble <work_dir>/backends/python/ from the pieces the wheel keeps apart."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = pytriton_dir / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonError(f"nvidia-pytriton ships no python-backend stub for Python {version}")
    source = pytriton_dir / "tritonserver" / "backends" / "python"
    target = work_dir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for part in (source / "libtriton_python.so", source / "triton_python_backend_utils.py", stub):
        link = target / part.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(part)
    return target.parent


def command_and_env(config: TritonConfig) -> tuple[list[str], dict[str, str]]:
    """The tritonserver command line and environment for this config."""
    pytriton_dir = _pytriton_dir()
    binary = pytriton_dir / "tritonserver" / "bin" / "tritonserver"
    if not config.model_repository.is_dir():
        raise TritonError(
            f"model repository {config.model_repository} does not exist: run `whatart export` first"
        )
    work_dir = config.work_dir.resolve()
    cache_dir = work_dir / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [
        str(binary),
        f"--model-repository={config.model_repository.resolve()}",
        f"--backend-directory={_backend_directory(pytriton_dir, work_dir)}",
        f"--cache-directory={cache_dir}",
        f"--http-address={config.host}",
        f"--http-port={config.http_port}",
        f"--grpc-address={config.host}",
        f"--grpc-port={config.grpc_port}",
        f"--metrics-address={config.host}",
        f"--metrics-port={config.metrics_port}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--log-verbose={config.log_verbose}",
        *restriction_flags(config.api_key),
    ]
    if config.models:
        command.append("--model-control-mode=explicit")
        command.extend(f"--load-model={name}" for name in config.models)
    env = dict(os.environ)
    libs = [str(pytriton_dir.parent / "nvidia_pytriton.libs"), str(sysconfig.get_config_var("LIBDIR"))]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return command, env


class TritonProcess:
    """A tritonserver child process: start, wait until ready, stop cleanly."""

    def __init__(self, config: TritonConfig, log_path: Path | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self._process: subprocess.Popen | None = None

    @property
    def ready_url(self) -> str:
        return f"http://{self.config.host}:{self.config.http_port}/v2/health/ready"

    def start(self, timeout_s: float = 120.0) -> None:
        command, env = command_and_env(self.config)
        output = open(self.log_path, "ab") if self.log_path else None
        started = time.perf_counter()
        # A session (and process group) of its own, which kill() ends whole: SIGKILL to
        # tritonserver alone would leave its python-backend stubs running.
        self._process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout_s)
        log.info(
            "Triton ready in %.1f s: HTTP %s:%d, gRPC %s:%d, metrics %s:%d",
            time.perf_counter() - started,
            self.config.host, self.config.http_port,
            self.config.host, self.config.grpc_port,
            self.config.host, self.config.metrics_port,
        )

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise TritonError(
                    f"tritonserver exited with code {self._process.returncode} before it was ready"
                    + self._failure_summary()
                )
            if is_ready(self.ready_url):
                return
            time.sleep(0.25)
        self.stop()
        raise TritonError(f"tritonserver was not ready after {timeout_s:.0f} s ({self.ready_url})")

    def _failure_summary(self) -> str:
        """The model-load errors from Triton's log, which say what to fix."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        errors = [line.split('] ', 1)[-1] for line in lines if "failed to load '" in line and line.startswith("E")]
        return ": " + "; ".join(errors) if errors else f"; see {self.log_path}"

    def wait(self) -> int:
        assert self._process is not None
        return self._process.wait()

    def terminate(self) -> None:
        """Ask Triton to shut down (SIGTERM) without waiting: safe inside a signal handler,
        where waiting on the child could deadlock with a wait() it interrupted."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (Triton drains in-flight requests), then SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver ignored SIGTERM for %.0f s: killing it", timeout_s)
            _kill_group(process)

    def kill(self) -> None:
        """SIGKILL: Triton gets no chance to drain or answer, as in a crash (fault tests)."""
        process, self._process = self._process, None
        if process is not None:
            _kill_group(process)

    def __enter__(self) -> TritonProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL tritonserver's process group, its python-backend stubs included, then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is gone already
    process.wait()


def is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
