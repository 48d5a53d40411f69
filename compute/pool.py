"""The process pool that runs analyses: warm start, self-healing, orderly shutdown.

Workers come from a forkserver that has already imported the kernels, so the event loop is never
forked and a replacement worker starts in milliseconds. A worker that exits, busy or idle, gets
the pool rebuilt at once: the jobs it broke are retried, and /ready answers 503 meanwhile. The
forkserver and the workers never act on SIGINT or SIGTERM: the parent alone ends them, so a
Ctrl-C to the terminal's process group, or a SIGTERM to the container's, never kills a
computation in flight or orphans a worker.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import forkserver, resource_tracker
from multiprocessing.process import BaseProcess
from typing import ParamSpec, TypeVar

from compute.memory import keep_freed_memory

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("compute.pool")

# A warm-up probe holds its worker this long, so that N concurrent probes land on N workers.
_PROBE_HOLD_S = 0.05
_WARM_UP_TIMEOUT_S = 60.0
# Workers yield the CPU to the event loop, which must keep answering probes and small requests.
_WORKER_NICENESS = 5


class PoolUnavailable(RuntimeError):
    """No pool takes the job: it broke again on the retry, is still being rebuilt, or was shut down."""


class ComputeTimeout(TimeoutError):
    """A job ran longer than the compute timeout; its pool was recycled."""


def _init_worker(service_pid: int) -> None:
    # The forkserver restores Python's SIGINT handler in its children; SIGTERM is already ignored
    # (compute/forkserver_preload.py).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(_WORKER_NICENESS)
    keep_freed_memory()
    threading.Thread(target=_exit_with, args=(service_pid,), name="exit-with-service", daemon=True).start()


def _exit_with(service_pid: int) -> None:
    """End this worker when the service process is gone, however it ended.

    A worker waits for jobs on a queue whose write end it holds too, so a service killed with
    SIGKILL (by the OOM killer, say) would otherwise leave it, and the forkserver, waiting for ever.
    An orderly shutdown joins the workers first, so this never cuts a job short.
    """
    try:
        pidfd = os.pidfd_open(service_pid)
    except ProcessLookupError:
        os._exit(1)
    select.select([pidfd], [], [])
    os._exit(1)


def _start_forkserver() -> None:
    """Start the forkserver with SIGINT and SIGTERM blocked; it and its workers inherit the mask.

    The forkserver ignores both only once its interpreter has started and run its preload; a
    signal to the whole process group before that (Ctrl-C during start-up) would kill it, and the
    pool could not start. Blocked, such a signal stays pending until it is ignored, which drops it.
    The service's own signals wait the few milliseconds this takes, then are handled as usual.
    The resource tracker, which the forkserver starts first, is started beforehand: starting it
    unblocks both signals.
    """
    resource_tracker.ensure_running()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _probe() -> int:
    time.sleep(_PROBE_HOLD_S)
    return os.getpid()


class ComputePool:
    """A ProcessPoolExecutor that is warmed before use and rebuilt when a worker dies."""

    def __init__(
        self,
        workers: int,
        *,
        compute_timeout_s: float,
        on_restart: Callable[[], None] = lambda: None,
    ) -> None:
        self.workers = workers
        self.compute_timeout_s = compute_timeout_s
        self._on_restart = on_restart
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["compute.forkserver_preload"])
        self._executor: ProcessPoolExecutor | None = None
        self._generation = 0
        self._warm = False
        self._ended = False  # shut down or abandoned: never rebuilt again
        self._healing: asyncio.Task[None] | None = None
        # The warm pool's workers, whose exit sentinels the event loop watches.
        self._watched: list[BaseProcess] = []

    @property
    def ready(self) -> bool:
        return self._warm

    async def start(self) -> None:
        _start_forkserver()
        self._executor = self._new_executor()
        await self._warm_up()
        self._watch_workers()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` in a worker. A broken pool is rebuilt and the job retried once."""
        for attempt in (1, 2):
            assert self._executor is not None, "start() the pool first"
            executor, generation = self._executor, self._generation
            try:
                future = asyncio.wrap_future(_submit(executor, fn, *args, **kwargs))
                return await asyncio.wait_for(future, self.compute_timeout_s)
            except BrokenProcessPool:
                log.warning("process pool broken; rebuilding (attempt %d)", attempt)
                await self._recover(generation)
            except TimeoutError:
                log.error("job exceeded %g s; recycling the pool", self.compute_timeout_s)
                if generation == self._generation:
                    # A hung worker cannot be interrupted: killing the workers breaks the pool,
                    # the other workers' jobs fail with BrokenProcessPool and are retried.
                    _kill_workers(executor)
                    self._start_healing()
                # The answer does not wait for the rebuild: waiting up to COMPUTE_TIMEOUT_S for it
                # made this job a PoolUnavailable whenever the rebuild took longer.
                raise ComputeTimeout(f"analysis exceeded {self.compute_timeout_s:g} s") from None
        raise PoolUnavailable("the process pool broke twice")

    async def shutdown(self) -> None:
        """Join the workers after every submitted job has finished."""
        self._stop_healing()
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True)

    def abandon(self) -> None:
        """Kill the workers, whatever they are doing: their jobs and any queued fail.

        Returns once the executor's own thread has ended, which takes milliseconds with its
        workers dead. Left running, it could close its wake-up pipe just as CPython 3.11's exit
        hook writes to that pipe without a lock (OSError: Bad file descriptor as the process exits).
        """
        self._stop_healing()
        if self._executor is not None:
            _kill_workers(self._executor)
            self._executor.shutdown(wait=True, cancel_futures=True)

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self._context,
            initializer=_init_worker,
            initargs=(os.getpid(),),
        )

    async def _warm_up(self) -> None:
        """Return once every worker has started and imported the kernels."""
        assert self._executor is not None
        executor = self._executor
        pids: set[int] = set()
        deadline = time.monotonic() + _WARM_UP_TIMEOUT_S
        while len(pids) < self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(pids)} of {self.workers} pool workers started")
            probes = [asyncio.wrap_future(_submit(executor, _probe)) for _ in range(self.workers)]
            pids.update(await asyncio.gather(*probes))
        self._warm = True
        log.info("process pool warm", extra={"workers": self.workers, "pids": sorted(pids)})

    async def _recover(self, broken_generation: int) -> None:
        """Return once a pool newer than ``broken_generation`` is warm (PoolUnavailable if slow).

        One healing task per breakage, shared by every job that saw it; it keeps going after a
        waiter gives up, so the pool heals (and /ready recovers) without further traffic.
        """
        if self._ended:
            raise PoolUnavailable("the process pool has been shut down")
        if self._generation == broken_generation:
            self._start_healing()
        healing = self._healing
        if healing is None:
            return  # already healed
        try:
            await asyncio.wait_for(asyncio.shield(healing), self.compute_timeout_s)
        except TimeoutError:
            raise PoolUnavailable("the process pool is being rebuilt") from None

    def _start_healing(self) -> None:
        if self._healing is None and not self._ended:
            self._healing = asyncio.create_task(self._heal())

    def _stop_healing(self) -> None:
        """No longer ready, and no rebuild: the pool is ending."""
        self._ended = True
        self._warm = False
        self._unwatch_workers()
        if self._healing is not None:
            self._healing.cancel()

    def _watch_workers(self) -> None:
        """Heal as soon as a worker of the warm pool exits, not when the next job meets it.

        A worker killed between jobs (by the OOM killer, say) would otherwise leave /ready at 200
        on a broken pool. A process's sentinel turns readable when it exits; holding the process
        objects keeps their sentinels open while they are watched.
        """
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        self._watched = _workers_of(self._executor)
        for process in self._watched:
            loop.add_reader(process.sentinel, self._worker_exited, self._generation, process.pid)

    def _unwatch_workers(self) -> None:
        loop = asyncio.get_running_loop()
        for process in self._watched:
            loop.remove_reader(process.sentinel)
        self._watched = []

    def _worker_exited(self, generation: int, pid: int) -> None:
        if generation != self._generation:
            return  # a pool already replaced
        self._unwatch_workers()
        if self._warm:  # not shutting down
            # Its exit status is not read here: the executor's own thread reads it from the sentinel.
            log.warning("pool worker %d exited; rebuilding the pool", pid)
            self._start_healing()

    async def _heal(self) -> None:
        self._warm = False
        delay_s = 0.05
        try:
            while True:
                self._replace_executor()
                try:
                    await self._warm_up()
                    self._watch_workers()
                    break
                except (BrokenProcessPool, RuntimeError) as error:
                    # A worker died while warming up (or never started): build yet another.
                    log.warning("pool warm-up failed (%s); rebuilding in %.2f s", error, delay_s)
                    await asyncio.sleep(delay_s)
                    delay_s = min(delay_s * 2, 5.0)
            self._on_restart()
        finally:
            self._healing = None

    def _replace_executor(self) -> None:
        self._unwatch_workers()
        broken, self._executor = self._executor, self._new_executor()
        self._generation += 1
        assert broken is not None
        # Survivors ignore SIGTERM (which the executor sends them), and a hung one would never
        # exit, so end them for sure. The old pool's jobs, queued ones too, then fail with
        # BrokenProcessPool and are retried; cancelled ones would end their requests instead (the
        # pool may be replaced before its executor has noticed the dead worker).
        _kill_workers(broken)
        broken.shutdown(wait=False)


def _submit(executor: ProcessPoolExecutor, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """``executor.submit``, where an OSError also means a broken pool.

    A submission may start a worker; if another worker dies at that moment, the executor closes
    the queues the new worker is being handed, and the forkserver hand-off fails with EBADF.
    """
    try:
        return executor.submit(fn, *args, **kwargs)
    except OSError as error:
        raise BrokenProcessPool(f"starting a worker failed: {error}") from error


def _workers_of(executor: ProcessPoolExecutor) -> list[BaseProcess]:
    """Every worker the executor started, including ones that never took a job."""
    # Python 3.14 adds ProcessPoolExecutor.kill_workers(); until then, its process table.
    return list((executor._processes or {}).values())


def _kill_workers(executor: ProcessPoolExecutor) -> None:
    for process in _workers_of(executor):
        process.kill()
