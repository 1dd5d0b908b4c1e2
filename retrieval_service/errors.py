"""The base of every expected failure: its message tells the user what went wrong and
what to do, so entry points print it as one line instead of a traceback."""


class WhatartError(Exception):
    """An expected failure with an actionable message."""
