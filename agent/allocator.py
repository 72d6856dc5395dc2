"""Process-level memory allocator settings for command-line runs.

Every tracked frame decodes and frees several megabytes of images and
arrays. glibc's malloc hands blocks over 128 KiB back to the kernel at once
and trims the heap eagerly, so the next frame's arrays page-fault their
memory in again: a third of a pose run's CPU went to the kernel. Keeping
freed memory in the process (larger mmap and trim thresholds) halves that
system time; resident memory stays about the same, because the same sizes
are reused every frame. Results do not depend on it.
"""

from __future__ import annotations

import ctypes

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Tune glibc malloc to reuse freed memory instead of returning it; False where not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the running process's C library
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no CDLL(None)
        return False
    return all(mallopt(option, value) == 1 for option, value in (
        (_M_MMAP_THRESHOLD, 256 << 20), (_M_TRIM_THRESHOLD, 512 << 20), (_M_TOP_PAD, 64 << 20)))
