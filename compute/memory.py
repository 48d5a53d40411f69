"""glibc's malloc, told to keep freed memory for the next analysis instead of returning it.

By default glibc serves an allocation above 128 KiB with its own mmap and unmaps it when freed,
and it trims the heap once 128 KiB at its top are free (both limits rise only after such an
allocation is freed). An analysis allocates and frees megabytes (the body, the decoded numbers,
numpy's arrays), so each one faulted the same pages in again: 1.3-1.9 ms of a 1.4 MB body's
8 ms here (docs/performance.md). With these limits a process keeps at most
``KEPT_FREE_BYTES`` of freed heap, and allocations up to ``HEAP_ALLOCATION_BYTES`` reuse it; a
1,000,000-number body still gets its own mapping and is returned whole.
"""

from __future__ import annotations

import ctypes

HEAP_ALLOCATION_BYTES = 4 << 20
KEPT_FREE_BYTES = 16 << 20

# mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Set this process's malloc limits; False where the C library has no glibc ``mallopt``."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_ALLOCATION_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEPT_FREE_BYTES))
