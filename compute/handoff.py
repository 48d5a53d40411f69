"""Bodies handed to pool workers through shared memory rather than through the executor's pipe.

Pickled into the call queue, a 2 MB body costs the event loop's process a pickle and a pipe
write, and the worker a read in 64 KiB pieces and an unpickle: ~4 ms per job here. Instead, each
job in flight holds a slot, a memfd that the service writes the body into and that the worker
maps; only a small ``SharedBody`` reference crosses the pipe. Slots are reused, so up to
``KEPT_SLOT_BYTES`` their pages stay mapped in both processes and a hand-off is one memcpy.

A worker reaches a slot through ``/proc/<service pid>/fd/<fd>``, which any process of the same
user may open. ``slots_for`` proves that in a worker at start-up; where it fails, the dispatcher
keeps the pipe.
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from compute.analysis import Findings, analyze_body
from compute.pool import ComputePool
from compute.schema import Limits

log = logging.getLogger("compute.handoff")

# A slot grows in steps of this size, so bodies of similar sizes reuse its mapping.
_GROWTH_STEP = 1 << 20
# A slot larger than this is emptied after its job: the rare huge body does not pin its memory.
KEPT_SLOT_BYTES = 4 << 20


class SharedBody(NamedTuple):
    """Where a worker finds a body: the owner's memfd, its layout version, and the body's length."""

    owner_pid: int
    fd: int
    version: int
    capacity: int
    length: int

    def read(self) -> bytes:
        return _mapping_of(self)[: self.length]


class _Slot:
    def __init__(self) -> None:
        self.fd = os.memfd_create("sre-microservice-body", os.MFD_CLOEXEC)
        self.version = 0
        self.capacity = 0
        self.mapping: mmap.mmap | None = None

    def resize(self, capacity: int) -> None:
        # A new version tells workers that their mapping of the old size is stale.
        if self.mapping is not None:
            self.mapping.close()
            self.mapping = None
        os.ftruncate(self.fd, capacity)
        self.capacity = capacity
        self.version += 1
        if capacity:
            self.mapping = mmap.mmap(self.fd, capacity)

    def close(self) -> None:
        if self.mapping is not None:
            self.mapping.close()
        os.close(self.fd)


class BodySlots:
    """The service's side: one slot per job in flight, created on demand and reused."""

    def __init__(self) -> None:
        self._free: list[_Slot] = []
        self._all: list[_Slot] = []

    @contextmanager
    def holding(self, body: bytes) -> Iterator[SharedBody]:
        """Put ``body`` in a free slot for as long as the job that reads it runs."""
        slot = self._free.pop() if self._free else self._new_slot()
        try:
            if slot.capacity < len(body) or not slot.capacity:  # an empty file cannot be mapped
                slot.resize(max(-(-len(body) // _GROWTH_STEP), 1) * _GROWTH_STEP)
            if body:
                assert slot.mapping is not None
                slot.mapping[: len(body)] = body
            yield SharedBody(os.getpid(), slot.fd, slot.version, slot.capacity, len(body))
        finally:
            if slot.capacity > KEPT_SLOT_BYTES:
                slot.resize(0)
            self._free.append(slot)

    def close(self) -> None:
        """Release every slot; no job may be running."""
        for slot in self._all:
            slot.close()
        self._all.clear()
        self._free.clear()

    def _new_slot(self) -> _Slot:
        slot = _Slot()
        self._all.append(slot)
        return slot


async def slots_for(pool: ComputePool) -> BodySlots | None:
    """Slots for ``pool``'s jobs if its workers can read them here, else None (use the pipe)."""
    slots = BodySlots()
    probe = b"a body handed over through shared memory"
    try:
        with slots.holding(probe) as shared:
            seen = await pool.run(_read_shared, shared)
    except OSError as error:
        seen = f"{type(error).__name__}: {error}"
    if seen == probe:
        return slots
    slots.close()
    log.warning("pool workers cannot read shared memory here (%s); bodies go through the pipe", seen)
    return None


def analyze_shared(body: SharedBody, limits: Limits) -> Findings:
    """The pool's entry point: ``analyze_body`` on a body in a slot."""
    return analyze_body(body.read(), limits)


def _read_shared(body: SharedBody) -> bytes:
    return body.read()


# A worker's mappings of the slots it has read, by (owner, fd): (version, mapping).
_mappings: dict[tuple[int, int], tuple[int, mmap.mmap]] = {}


def _mapping_of(body: SharedBody) -> mmap.mmap:
    key = (body.owner_pid, body.fd)
    cached = _mappings.get(key)
    if cached is not None and cached[0] == body.version:
        return cached[1]
    if cached is not None:
        cached[1].close()
    fd = os.open(f"/proc/{body.owner_pid}/fd/{body.fd}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        # Populated at once: one call faults in every page instead of one fault per page.
        mapping = mmap.mmap(fd, body.capacity, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    _mappings[key] = (body.version, mapping)
    return mapping
