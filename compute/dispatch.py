"""Where an analysis runs: inline on the event loop, in a thread, or in the process pool.

``adaptive`` computes small payloads inline (a pool round trip costs more than their analysis)
and sends large ones, still as bytes, to the pool, so the event loop never spends more than a few
milliseconds on one request while others wait. A large body that is the only request in progress
runs inline too, up to ``inline_alone_threshold_bytes``: with nobody else to serve, the pool's
hand-off would only add its latency. Backpressure is decided before the body is read: at most
``max_pending`` jobs may be queued or running off the event loop. Half a second after the last
huge body (one whose slot is not kept), the heap's free pages go back to the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from compute.analysis import Findings, analyze_body
from compute.decoding import InvalidPayload, MalformedPayload
from compute.handoff import ArrivingBody, BodySlots, SharedBody, analyze_shared, slots_for
from compute.memory import HUGE_BODY_BYTES, keep_freed_memory, release_freed_memory
from compute.pool import ComputePool, ComputeTimeout, PoolUnavailable
from compute.schema import Analysis, Limits

# Long enough that a stream of huge bodies keeps its warm heap, short enough that memory settles
# soon after a burst.
_RELEASE_AFTER_S = 0.5


class Dispatch(enum.StrEnum):
    ADAPTIVE = "adaptive"
    INLINE = "inline"
    THREAD = "thread"
    PROCESS = "process"


class Mode(enum.StrEnum):
    """Where one job runs."""

    INLINE = "inline"
    THREAD = "thread"
    PROCESS = "process"


class Overloaded(RuntimeError):
    """Too many jobs are pending; the caller should retry after ``retry_after_s``."""

    def __init__(self, pending: int, retry_after_s: int) -> None:
        super().__init__(f"{pending} analyses pending")
        self.retry_after_s = retry_after_s


class DispatchObserver(Protocol):
    """Receives what the dispatcher does; the service turns it into metrics."""

    def job_done(self, mode: Mode, outcome: str, seconds: float) -> None: ...
    def pending_changed(self, pending: int) -> None: ...
    def handed_off_changed(self, jobs: int, workers: int) -> None: ...
    def shed_one(self) -> None: ...
    def pool_restarted(self) -> None: ...


class Dispatcher:
    def __init__(
        self,
        dispatch: Dispatch,
        limits: Limits,
        *,
        workers: int,
        max_pending: int,
        inline_threshold_bytes: int,
        inline_alone_threshold_bytes: int,
        compute_timeout_s: float,
        observer: DispatchObserver,
    ) -> None:
        self.dispatch = dispatch
        self.limits = limits
        self.workers = workers
        self.max_pending = max_pending
        self.inline_threshold_bytes = inline_threshold_bytes
        self.inline_alone_threshold_bytes = inline_alone_threshold_bytes
        self._observer = observer
        self._pending = 0  # places held by off-loop jobs: receiving their body, queued or running
        self._handed_off = 0  # jobs in the thread or process pool, queued or running
        self._inline_places = _InlinePlaces()
        # Where every job runs, unless adaptive dispatch decides per body.
        self._fixed_mode = None if dispatch is Dispatch.ADAPTIVE else Mode(dispatch.value)
        self._threads: ThreadPoolExecutor | None = None
        self._pool: ComputePool | None = None
        self._slots: BodySlots | None = None
        self._release: asyncio.TimerHandle | None = None
        # Shut down or abandoned: no job runs off the loop any more.
        self._closed = False
        if dispatch is Dispatch.THREAD:
            self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="analysis")
        if dispatch in (Dispatch.PROCESS, Dispatch.ADAPTIVE):
            self._pool = ComputePool(workers, compute_timeout_s=compute_timeout_s, on_restart=observer.pool_restarted)

    @property
    def pool(self) -> ComputePool | None:
        return self._pool

    @property
    def ready(self) -> bool:
        return self._pool is None or self._pool.ready

    async def start(self) -> None:
        keep_freed_memory()  # for analyses in this process; pool workers do the same
        if self._pool is not None:
            await self._pool.start()
            self._slots = await slots_for(self._pool)

    async def shutdown(self) -> None:
        """Wait for every job that was handed off, then stop the workers."""
        self._closed = True
        if self._release is not None:
            self._release.cancel()
        if self._pool is not None:
            await self._pool.shutdown()
        if self._slots is not None:
            self._slots.close()
        if self._threads is not None:
            await asyncio.to_thread(self._threads.shutdown, wait=True)

    def abandon(self) -> None:
        """Stop the pool's workers now, whatever they are doing (a forced exit)."""
        self._closed = True
        if self._pool is not None:
            self._pool.abandon()

    def mode_for(self, body_bytes: int | None) -> Mode:
        """Choose where a body of this size runs; an unknown size (chunked) counts as large."""
        if self._fixed_mode is not None:
            return self._fixed_mode
        small = body_bytes is not None and body_bytes <= self.inline_threshold_bytes
        return Mode.INLINE if small else Mode.PROCESS

    def reserve(self, mode: Mode) -> contextlib.AbstractContextManager[None]:
        """Hold a place for one job while its body is read and analysed.

        An off-loop job raises Overloaded when no place is free; an inline job is never refused
        (the event loop is busy with it until it is done), only counted.
        """
        return self._inline_places if mode is Mode.INLINE else self._hold_place()

    @contextlib.contextmanager
    def _hold_place(self) -> Iterator[None]:
        if self._pending >= self.max_pending:
            self._observer.shed_one()
            raise Overloaded(self._pending, retry_after_s=1)
        self._pending += 1
        self._observer.pending_changed(self._pending)
        try:
            yield
        finally:
            self._pending -= 1
            self._observer.pending_changed(self._pending)

    def streams(self, body_bytes: int | None, mode: Mode) -> bool:
        """Whether a body is written into a pool slot as it arrives (``receiving``), not joined.

        A body bound for the pool that cannot run inline, however alone it is; and a chunked one,
        whose size is known only at its end (copied out should it run inline after all).
        """
        return (
            mode is Mode.PROCESS
            and self._slots is not None
            and (body_bytes is None or not self._may_run_alone(body_bytes))
        )

    @contextlib.asynccontextmanager
    async def receiving(self, body_bytes: int | None) -> AsyncIterator[ArrivingBody]:
        """Where the pieces of a body that ``streams`` go; ``analyze`` its ``shared()`` body."""
        assert self._slots is not None
        async with self._slots.receiving(body_bytes) as body:
            yield body

    async def analyze(self, body: bytes | SharedBody, mode: Mode) -> Analysis:
        """Analyse ``body`` where ``mode`` says, or inline when it is alone (see the module doc).

        A body already in a pool slot (``receiving``) runs in the pool, or inline as a copy.
        """
        size = body.length if isinstance(body, SharedBody) else len(body)
        if mode is Mode.PROCESS and self._may_run_alone(size):
            # A body that arrived whole gets here without suspending once, ahead of the requests
            # parsed in the same pass of the loop: let them take their places before counting.
            await asyncio.sleep(0)
            if self._pending + self._inline_places.held <= 1:  # its own place only
                mode = Mode.INLINE
                if isinstance(body, SharedBody):  # chunked, streamed before its size was known
                    body = body.copy()
        started = time.perf_counter()
        outcome = "error"
        try:
            numeric, text = await self._run(body, mode)
            outcome = "ok"
        except (MalformedPayload, InvalidPayload):
            outcome = "invalid"
            raise
        except ComputeTimeout:
            outcome = "timeout"
            raise
        finally:
            self._observer.job_done(mode, outcome, time.perf_counter() - started)
            if size > HUGE_BODY_BYTES:
                self._release_memory_later()
        elapsed_ms = (time.perf_counter() - started) * 1000
        return Analysis(numeric_analysis=numeric, text_analysis=text, processing_time_ms=elapsed_ms)

    def _release_memory_later(self) -> None:
        """Release the heap's free pages once no huge body has come for a while (compute/memory.py).

        By then the body itself is gone: the caller drops it when this job returns.
        """
        if self._release is not None:
            self._release.cancel()
        loop = asyncio.get_running_loop()
        self._release = loop.call_later(_RELEASE_AFTER_S, loop.run_in_executor, None, release_freed_memory)

    def _may_run_alone(self, body_bytes: int) -> bool:
        # Whether the rule applies at all; whether the body is alone is counted once it is in.
        return self._fixed_mode is None and body_bytes <= self.inline_alone_threshold_bytes

    async def _run(self, body: bytes | SharedBody, mode: Mode) -> Findings:
        if mode is Mode.INLINE:
            assert isinstance(body, bytes)  # a body in a slot runs inline only as a copy (analyze)
            return analyze_body(body, self.limits)
        self._handed_off += 1
        self._observer.handed_off_changed(self._handed_off, self.workers)
        try:
            return await self._run_off_loop(body, mode)
        finally:
            self._handed_off -= 1
            self._observer.handed_off_changed(self._handed_off, self.workers)

    async def _run_off_loop(self, body: bytes | SharedBody, mode: Mode) -> Findings:
        if self._closed:
            # A request whose head was still arriving when the drain's time ran out may get here
            # while the pool is joined: it is told to retry elsewhere.
            raise PoolUnavailable("the compute pool has been shut down")
        if isinstance(body, SharedBody):
            assert self._pool is not None
            return await self._pool.run(analyze_shared, body, self.limits)
        if mode is Mode.THREAD:
            assert self._threads is not None
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._threads, analyze_body, body, self.limits)
        assert self._pool is not None
        if self._slots is None:
            return await self._pool.run(analyze_body, body, self.limits)
        async with self._slots.holding(body) as shared:
            return await self._pool.run(analyze_shared, shared, self.limits)


class _InlinePlaces:
    """The places inline jobs hold: only counted, so that a large body knows it is not alone."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = 0

    def __enter__(self) -> None:
        self.held += 1

    def __exit__(self, *exc_info: object) -> None:
        self.held -= 1
