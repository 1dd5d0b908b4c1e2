"""The key Triton's restricted APIs ask for, shared by `whatart triton` and every whatart client.

Triton would otherwise let any local process, or a web page through the browser, load and
unload models, change logging and tracing, read statistics and infer past the service's
admission limit. `whatart triton` restricts everything but health and metadata to callers
that send this key (process.py); whatart's clients send it with every call (KeyHeader).

Triton takes the key on its command line, where other users of the host can read it (ps,
/proc): deployments should run Triton as its own user or in its own container, as
docker-compose.yml and deploy/kubernetes do.
"""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path
from typing import TYPE_CHECKING

from tritonclient.grpc import InferenceServerClientPlugin
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.settings import Settings

KEY_HEADER = "whatart-triton-key"
"""The HTTP header that carries the key; the name in Triton's restriction flags."""
GRPC_KEY_HEADER = f"triton-grpc-protocol-{KEY_HEADER}"
"""The gRPC metadata key that carries it: Triton 2.51 expects the flag's name with this prefix."""
_ALLOWED = frozenset(string.ascii_letters + string.digits + string.punctuation) - set("=:,")
"""Printable ASCII but the separators of Triton's `<apis>:<header>=<key>` flag value, no spaces."""


if TYPE_CHECKING:
    from tritonclient._request import Request


class TritonKeyError(WhatartError):
    """The key is unusable; the message says where it came from and what a key may contain."""


def triton_api_key(settings: Settings) -> str:
    """WHATART_TRITON_API_KEY when set, else the key in triton_api_key_file, made on first use."""
    if settings.triton_api_key:
        return _checked(settings.triton_api_key, "WHATART_TRITON_API_KEY")
    path = settings.triton_api_key_file
    try:
        if not path.exists():
            _publish(path, secrets.token_urlsafe(32))
        key = path.read_text().strip()
    except OSError as error:
        raise TritonKeyError(f"cannot read or make the Triton API key file {path} ({error.strerror}): "
                             "set WHATART_TRITON_API_KEY, or WHATART_TRITON_API_KEY_FILE to a writable path") from None
    return _checked(key, str(path))


def _publish(path: Path, key: str) -> None:
    """Write the key to a private file of its own, then link it into place: a process that
    races this one (the service and ingest starting together) finds the whole key or none,
    and the first to link wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(key + "\n")
        os.link(draft, path)
    except FileExistsError:
        pass  # another process made it first: its key is the one
    finally:
        draft.unlink()


def _checked(key: str, source: str) -> str:
    if not key or not set(key) <= _ALLOWED:
        raise TritonKeyError(f"the Triton API key from {source} is empty or has a space or one of = : , "
                             "(or a character that is not printable ASCII): set WHATART_TRITON_API_KEY to another")
    return key


class KeyHeader(InferenceServerClientPlugin):
    """Sends the key with every call of the tritonclient (gRPC, sync or asyncio) it is
    registered on: Triton refuses its restricted APIs without it."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key

    def __call__(self, request: Request) -> None:
        request.headers[GRPC_KEY_HEADER] = self.api_key
