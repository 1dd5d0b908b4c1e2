"""Who may call the APIs: an optional bearer token for everything but probes.

With `WHATART_API_TOKEN` set, every REST route under /v1, the API's documentation (/docs,
/redoc, /openapi.json: they describe what a caller could do) and every call of the gRPC
Identifier service need `Authorization: Bearer <token>` (the scheme in any case, as HTTP
says); /health, /metrics, the gRPC health service and reflection stay open for probes and
scrapers. Tokens are compared in
constant time and never logged. Without a token the service is open, which is why it
binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import hmac

BEARER = "Bearer "
PROTECTED_REST_PREFIX = "/v1/"
DOCUMENTATION_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
PROTECTED_GRPC_PREFIX = "/whatart.v1."


def protected_rest_path(path: str) -> bool:
    return path.startswith(PROTECTED_REST_PREFIX) or path in DOCUMENTATION_PATHS


def authorised(header: str | None, token: str) -> bool:
    """Whether an Authorization header value carries `token` (always true without one)."""
    if not token:
        return True
    scheme, _, credentials = (header or "").strip().partition(" ")
    if scheme.lower() != BEARER.strip().lower():
        return False
    return hmac.compare_digest(credentials.strip().encode(errors="surrogateescape"), token.encode())


def refusal(header: str | None) -> str:
    """What to tell a caller who was refused."""
    if not header:
        return "this service needs a token: send `Authorization: Bearer <token>` (WHATART_API_TOKEN on the client)"
    return "the token is not valid for this service"


def bearer(token: str) -> dict[str, str]:
    """The header a client sends; none without a token."""
    return {"Authorization": BEARER + token} if token else {}


def grpc_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """`bearer` as gRPC call metadata, whose keys must be lower case; empty without a token."""
    return tuple((key.lower(), value) for key, value in bearer(token).items())
