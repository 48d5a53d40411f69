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


def page_faults(variant: str) -> int:
    done = subprocess.run([sys.executable, "-c", FAULTS, variant], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    assert 1 << 20 <= HEAP_ALLOCATION_BYTES and 4 << 20 <= KEPT_FREE_BYTES
    pages = 50 * (4 << 20) // 4096
    assert page_faults("default") > pages // 2  # glibc's defaults: the heap is trimmed every round
    assert page_faults("kept") < pages // 20
