"""The base of every expected failure: its message tells the user what went wrong and
what to do, so entry points print it as one line instead of a traceback."""


class WhatartError(Exception):
    """An expected failure with an actionable message."""


class DependencyUnavailable(WhatartError):
    """A part the service needs (Triton, Milvus) cannot answer now: a retry shortly may succeed.
    APIs answer 503 / UNAVAILABLE with `public_message`; the full message goes to the log."""

    part = "a part the service needs"

    @property
    def public_message(self) -> str:
        return f"{self.part} is unavailable; try again shortly"
