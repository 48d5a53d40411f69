"""glibc's malloc, told to keep freed memory for the next analysis instead of returning it.

By default glibc serves an allocation above 128 KiB with its own mmap and unmaps it when freed,
and trims the heap once 128 KiB at its top are free. Both limits rise only as far as the largest
such allocation freed so far (the trim limit to twice that). An analysis allocates and frees
several times its body's size (the body, the decoded numbers, numpy's arrays), so each one
faulted the same pages in again: a lone 1.4 MB request took 10.1-10.7 ms instead of 8.0-8.7 ms
here (docs/performance.md).
These are the limits glibc's own adjustment reaches after one allocation of its maximum
(32 MiB, also MAX_BODY_BYTES' default), set from the start: a process keeps at most
``KEPT_FREE_BYTES`` of freed heap, and allocations up to ``HEAP_ALLOCATION_BYTES`` reuse it.
"""

from __future__ import annotations

import ctypes

HEAP_ALLOCATION_BYTES = 32 << 20
KEPT_FREE_BYTES = 2 * HEAP_ALLOCATION_BYTES

# mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Set this process's malloc limits; False where the C library has no glibc ``mallopt``."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_ALLOCATION_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEPT_FREE_BYTES))
