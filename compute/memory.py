"""glibc's malloc, told to keep freed memory for the next analysis instead of returning it.

By default glibc serves an allocation above 128 KiB with its own mmap and unmaps it when freed,
and trims the heap once 128 KiB at its top are free. Both limits rise only as far as the largest
such allocation freed so far (the trim limit to twice that). An analysis allocates and frees
several times its body's size (the body, the decoded numbers, numpy's arrays), so each one
faulted the same pages in again: a lone 1.4 MB request took 10.1-10.7 ms instead of 8.0-8.7 ms
here (docs/performance.md).

Set from the start instead: allocations up to ``HEAP_ALLOCATION_BYTES`` (glibc's own maximum for
the adjustment, and MAX_BODY_BYTES' default) come from the heap, and a process keeps at most
``KEPT_FREE_BYTES`` of it freed. glibc would keep twice that after such an allocation; 64 MiB in
each of the three processes let the settled memory drift by more than the overload test's
64 MiB between bursts of 1,000,000-number payloads.

Kept memory is only reused where it is free at the heap's top, though. A burst of huge bodies
leaves freed blocks below whatever small object was last allocated above them, and glibc keeps
those for good: the service settled anywhere between 60 and 180 MiB after the same burst.
``release_freed_memory`` returns them; the dispatcher calls it once such a burst is over.
"""

from __future__ import annotations

import ctypes

HEAP_ALLOCATION_BYTES = 32 << 20
KEPT_FREE_BYTES = HEAP_ALLOCATION_BYTES
# Bodies above this size are rare. What one needed is given back once it is done, instead of
# kept for the next: its slot's pages (compute/handoff.py), the heap it freed (the dispatcher
# releases it), and no decoder buffers sized for it (compute/decoding.py leaves it to msgspec).
HUGE_BODY_BYTES = 4 << 20

# mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_LIBC = ctypes.CDLL(None)


def keep_freed_memory() -> bool:
    """Set this process's malloc limits; False where the C library has no glibc ``mallopt``."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_ALLOCATION_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEPT_FREE_BYTES))


def release_freed_memory() -> bool:
    """Return every free page of the heap to the kernel, wherever it lies; False without glibc.

    Blocking (about 7 ms for 100 MiB in holes) and holding malloc's lock meanwhile: call it in a
    thread, and rarely.
    """
    malloc_trim = getattr(_LIBC, "malloc_trim", None)
    return malloc_trim is not None and bool(malloc_trim(0))
