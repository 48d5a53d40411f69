"""The allocator keeps freed memory between analyses, so large ones stop faulting pages in."""

from __future__ import annotations

import subprocess
import sys

from compute.memory import HEAP_ALLOCATION_BYTES, KEPT_FREE_BYTES

# Like an analysis: allocates and fills four 1 MiB buffers, then frees them; 50 times. Prints the
# page faults after the first round.
FAULTS = """
import resource, sys
from compute.memory import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
def analysis():
    buffers = [bytes([n]) * (1 << 20) for n in range(4)]
analysis()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    analysis()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def run_fresh(script: str, *args: str) -> str:
    """What ``script`` prints in a fresh interpreter, whose allocator no test has touched."""
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True).stdout


def page_faults(variant: str) -> int:
    return int(run_fresh(FAULTS, variant))


def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    assert 1 << 20 <= HEAP_ALLOCATION_BYTES and 4 << 20 <= KEPT_FREE_BYTES
    pages = 50 * (4 << 20) // 4096
    assert page_faults("default") > pages // 2  # glibc's defaults: the heap is trimmed every round
    assert page_faults("kept") < pages // 20


# Like a burst of huge bodies: each freed body lies below a small block allocated after it, so
# glibc cannot trim it away. Prints the resident MiB after freeing, then after the release.
HOLES = """
from compute.memory import keep_freed_memory, release_freed_memory
def resident_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))
assert keep_freed_memory()
bodies, pins = [], []
for n in range(8):
    bodies.append(bytes([n]) * (19 << 20))
    pins.append(bytearray(1000))  # above 512 bytes: from malloc's heap, not Python's pools
del bodies
freed = resident_mib()
assert release_freed_memory()
print(freed, resident_mib())
"""


def test_freed_memory_in_holes_of_the_heap_is_released() -> None:
    freed, released = map(int, run_fresh(HOLES).split())
    assert freed - released > 7 * 19  # every body but the one at the top, which glibc kept anyway
