"""Bodies handed to pool workers through shared memory rather than through the executor's pipe.

Pickled into the call queue, a 2 MB body costs the event loop's process a pickle and a pipe
write, and the worker a read in 64 KiB pieces and an unpickle: ~4 ms per job here. Instead, each
job in flight holds a slot, a memfd that the service writes the body into and that the worker
maps; only a small ``SharedBody`` reference crosses the pipe. Slots are reused, so up to
``HUGE_BODY_BYTES`` (compute/memory.py) their pages stay allocated, and mapped in the service
and the workers, between jobs; a larger slot is emptied after its job. A body that fits such a
slot is copied in on the event loop (a memcpy into pages that exist: ~0.1 ms for 2 MB); one that
needs new pages is written by a thread, since allocating them takes milliseconds and ``pwrite``
releases the GIL meanwhile. A large body can also be written in as it arrives, piece by piece
(``receiving``): it then never exists whole in the service, whose event loop would otherwise
spend 11-15 ms faulting in fresh pages to join a 17.5 MB body. A chunked body, whose size is
known only at its end, grows its slot as it arrives.

A worker reaches a slot through ``/proc/<service pid>/fd/<fd>``, which any process of the same
user may open. ``slots_for`` proves that in a worker at start-up; where it fails, the dispatcher
keeps the pipe.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import NamedTuple

from compute.analysis import Findings, analyze_body
from compute.memory import HUGE_BODY_BYTES
from compute.pool import ComputePool
from compute.schema import Limits

log = logging.getLogger("compute.handoff")

# A slot grows in steps of this size, so bodies of similar sizes reuse its mapping.
_GROWTH_STEP = 1 << 20


class SharedBody(NamedTuple):
    """Where a worker finds a body: the owner's memfd, its layout version, and the body's length."""

    owner_pid: int
    fd: int
    version: int
    capacity: int
    length: int

    def read(self) -> bytes:
        """In a worker: the body, from the worker's mapping of the slot."""
        return _mapping_of(self)[: self.length]

    def copy(self) -> bytes:
        """In the owner: the body as bytes, for a body that streamed in but runs inline after all."""
        body = os.pread(self.fd, self.length, 0)
        assert len(body) == self.length  # a memfd reads whole
        return body


class _Slot:
    def __init__(self) -> None:
        self.fd = os.memfd_create("sre-microservice-body", os.MFD_CLOEXEC)
        self.version = 0
        self.capacity = 0
        # The service's own mapping, while the slot is small enough to keep its pages.
        self._mapping: mmap.mmap | None = None
        # A thread emptying the slot after a huge body; the next job waits for it.
        self.emptying: asyncio.Future[None] | None = None

    def holds(self, size: int) -> bool:
        """Whether a body of ``size`` bytes fits in pages that are allocated and mapped here."""
        return self._mapping is not None and size <= self.capacity

    def copy_in(self, body: bytes) -> None:
        """Copy ``body`` into a slot that ``holds`` it: cheap enough for the event loop."""
        assert self._mapping is not None
        self._mapping[: len(body)] = body

    def fill(self, body: bytes) -> None:
        """Grow to hold ``body`` if needed, then write it. Blocking: run it in a thread."""
        self.reserve(len(body))
        self.write(body, 0)
        self.keep_mapped()

    def reserve(self, size: int) -> None:
        """Grow to hold ``size`` bytes. A memfd grows sparse: its pages come as they are written."""
        if self.capacity < size or not self.capacity:  # an empty file cannot be mapped
            self._resize(max(-(-size // _GROWTH_STEP), 1) * _GROWTH_STEP)

    def write(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            view = view[os.pwrite(self.fd, view, offset + len(data) - len(view)) :]

    def keep_mapped(self) -> None:
        """Map a slot whose pages are kept, for the bodies that ``copy_in`` will put there."""
        if self._mapping is None and self.capacity <= HUGE_BODY_BYTES:
            self._mapping = mmap.mmap(self.fd, self.capacity, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)

    def empty(self) -> None:
        self._resize(0)

    def _resize(self, capacity: int) -> None:
        self._unmap()
        os.ftruncate(self.fd, capacity)
        self.capacity = capacity
        self.version += 1  # tells workers that their mapping of the old size is stale

    def _unmap(self) -> None:
        if self._mapping is not None:
            self._mapping.close()
            self._mapping = None

    def close(self) -> None:
        self._unmap()
        os.close(self.fd)


class BodySlots:
    """The service's side: one slot per job in flight, created on demand and reused."""

    def __init__(self) -> None:
        self._free: list[_Slot] = []
        self._all: list[_Slot] = []

    @asynccontextmanager
    async def holding(self, body: bytes) -> AsyncIterator[SharedBody]:
        """Put ``body`` in a free slot for as long as the job that reads it runs."""
        slot = self._free.pop() if self._free else self._new_slot()
        filled: asyncio.Future[None] | None = None
        try:
            await self._emptied(slot)
            if slot.holds(len(body)):
                slot.copy_in(body)  # cheaper than the hop to a thread and back
            else:
                # Shielded, so that a cancelled request cannot hand the slot back while the thread
                # still writes it.
                filled = asyncio.get_running_loop().run_in_executor(None, slot.fill, body)
                await asyncio.shield(filled)
            yield SharedBody(os.getpid(), slot.fd, slot.version, slot.capacity, len(body))
        finally:
            if filled is None or filled.done():
                self._release(slot)
            else:
                filled.add_done_callback(lambda _: self._release(slot))

    @asynccontextmanager
    async def receiving(self, size: int | None) -> AsyncIterator[ArrivingBody]:
        """A free slot for a body that is written in as it arrives, held for as long as the job
        that reads it runs: sized for ``size`` bytes, or growing as it arrives (None: chunked)."""
        slot = self._free.pop() if self._free else self._new_slot()
        try:
            await self._emptied(slot)
            slot.reserve(size or 0)
            yield ArrivingBody(slot)
        finally:
            self._release(slot)

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

    @staticmethod
    async def _emptied(slot: _Slot) -> None:
        if slot.emptying is not None:
            # Still this job's slot: a new one would outlast it, past one slot per job. Should
            # emptying have failed, the slot still serves (it grows as needed).
            with suppress(OSError):
                await asyncio.shield(slot.emptying)
            slot.emptying = None

    def _release(self, slot: _Slot) -> None:
        if slot.emptying is None and slot.capacity > HUGE_BODY_BYTES:
            slot.emptying = asyncio.get_running_loop().run_in_executor(None, slot.empty)
        if slot.emptying is None:
            self._free.append(slot)
        else:
            # Free at once, so that a job finding no other free slot takes it (and waits) rather
            # than adding one; last in line, so that a ready slot is taken first.
            self._free.insert(0, slot)


class ArrivingBody:
    """A body being written into its slot piece by piece, on the event loop.

    Each piece is a few hundred KiB at most (as the HTTP server reads them), so writing it, pages
    allocated included, takes tens of microseconds; the 17.5 MB body itself never exists here. A
    piece past the slot's end grows it a step (an ``ftruncate``: a memfd keeps what it holds).
    """

    __slots__ = ("_slot", "length")

    def __init__(self, slot: _Slot) -> None:
        self._slot = slot
        self.length = 0

    def append(self, piece: bytes) -> None:
        self._slot.reserve(self.length + len(piece))
        self._slot.write(piece, self.length)
        self.length += len(piece)

    def shared(self) -> SharedBody:
        """The whole body, for a worker."""
        slot = self._slot
        slot.keep_mapped()
        return SharedBody(os.getpid(), slot.fd, slot.version, slot.capacity, self.length)


async def slots_for(pool: ComputePool) -> BodySlots | None:
    """Slots for ``pool``'s jobs if its workers can read them here, else None (use the pipe)."""
    slots = BodySlots()
    probe = b"a body handed over through shared memory"
    try:
        async with slots.holding(probe) as shared:
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
