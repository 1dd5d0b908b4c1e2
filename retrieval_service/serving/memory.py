"""Give large freed buffers back to the system at once.

glibc raises its mmap threshold after a large block is freed, so once a few big images have
been decoded, later ones come from heap arenas that are never returned: the service stays
gigabytes larger after a burst of large uploads. Fixing the threshold (1 MiB) keeps every
decode buffer (Pillow's 16 MiB blocks, numpy arrays) in its own mapping, unmapped when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""mallopt's parameter number (glibc malloc.h)"""
THRESHOLD_BYTES = 1 << 20


def return_large_buffers() -> None:
    """Set glibc's mmap threshold; on another C library, say so once and leave it be."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None or mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES) != 1:
        log.info("not glibc (no mallopt): large decode buffers are returned to the system as the C library decides")
