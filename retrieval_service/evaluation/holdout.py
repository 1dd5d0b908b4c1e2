"""The open-set hold-out: artworks that trained models never see, so the evaluation can
measure them on works they did not learn from.

Membership is a pure function of the artwork id (a sha256, no state, no randomness), so
`whatart train-head` and the evaluation harness agree on it without sharing a file.
"""

from __future__ import annotations

import hashlib

DEFAULT_FRACTION = 0.05
DEFAULT_SEED = 0


def is_held_out(artwork_id: str, fraction: float = DEFAULT_FRACTION, seed: int = DEFAULT_SEED) -> bool:
    """True for about `fraction` of all ids: the first 8 bytes of sha256(f"{seed}:{id}"),
    read as an unsigned big-endian integer h, give h / 2**64 < fraction."""
    digest = hashlib.sha256(f"{seed}:{artwork_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
