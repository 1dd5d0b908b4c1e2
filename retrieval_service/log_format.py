"""Logs as text for people or as JSON lines for log pipelines (WHATART_LOG_FORMAT), each
record carrying the request id of the request it was written for.

The id is the client's `X-Request-ID` (REST) or `request_id` (gRPC) when it is safe to log
(safe_request_id), else a new one, and is echoed in the response, so one answer can be
followed through the logs of every process.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import datetime, timezone

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
"""Set where a request enters (api.py middleware, grpc_api); asyncio tasks and threads started
for the request inherit it."""
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
"""What a client's request id may be: no newline or other character that could forge a log
line or a header, and a bounded length (64: room for a UUID with a prefix)."""
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
_RECORD_ATTRIBUTES = {*vars(logging.makeLogRecord({})), "message", "asctime", "request_id"}


def safe_request_id(given: str | None) -> str:
    """The client's id when SAFE_REQUEST_ID matches it whole, else a new one."""
    if given and SAFE_REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex[:16]


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and the fields a
    call passed as `extra` (e.g. the identify log's timings), so they can be queried."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", "-") != "-":
            entry["request_id"] = record.request_id
        entry.update({key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: int, log_format: str) -> None:
    """Root logging to stderr in `log_format` (one of FORMATS)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
