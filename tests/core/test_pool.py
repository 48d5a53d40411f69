"""The compute pool on its own: what a timed-out job reports, what becomes of the jobs behind it,
and what a forced exit leaves behind."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures.process import _ExecutorManagerThread

import pytest

from compute.pool import ComputePool, ComputeTimeout, PoolUnavailable


def test_a_timed_out_job_is_logged_with_the_compute_timeout_as_set(caplog: pytest.LogCaptureFixture) -> None:
    # COMPUTE_TIMEOUT_S=0.25 was logged as "job exceeded 0.2 s" while the 504 said 0.25 s.
    async def run() -> None:
        pool = ComputePool(1, compute_timeout_s=0.25)
        await pool.start()
        try:
            with pytest.raises(ComputeTimeout, match=r"exceeded 0\.25 s"):
                await pool.run(time.sleep, 60)
        finally:
            await pool.shutdown()

    with caplog.at_level(logging.ERROR, logger="compute.pool"):
        asyncio.run(run())
    assert "job exceeded 0.25 s; recycling the pool" in caplog.messages


def test_a_timed_out_job_is_a_timeout_even_when_the_pool_takes_longer_to_rebuild() -> None:
    # The timed-out job waited up to COMPUTE_TIMEOUT_S for the rebuild, which takes at least the
    # warm-up probe's 50 ms: with 0.01 s it ended in PoolUnavailable (503, outcome "error").
    async def run() -> None:
        rebuilt = asyncio.Event()
        pool = ComputePool(1, compute_timeout_s=0.01, on_restart=rebuilt.set)
        await pool.start()
        try:
            with pytest.raises(ComputeTimeout, match=r"exceeded 0\.01 s"):
                await pool.run(time.sleep, 60)
            await asyncio.wait_for(rebuilt.wait(), 60)  # the pool heals without the job waiting
        finally:
            await pool.shutdown()

    asyncio.run(run())


def test_the_jobs_queued_behind_a_timed_out_one_run_on_the_rebuilt_pool() -> None:
    # Killing the hung worker breaks the jobs queued behind it: they are retried, not answered 503.
    async def run() -> None:
        pool = ComputePool(1, compute_timeout_s=2)
        await pool.start()
        try:
            first_worker = await pool.run(os.getpid)
            hung = asyncio.create_task(pool.run(time.sleep, 60))
            await asyncio.sleep(1)  # queued well after it, so their own time has not run out
            queued = [asyncio.create_task(pool.run(os.getpid)) for _ in range(3)]
            with pytest.raises(ComputeTimeout):
                await hung
            workers = set(await asyncio.gather(*queued))
            assert len(workers) == 1 and first_worker not in workers
        finally:
            await pool.shutdown()

    asyncio.run(run())


def test_abandoning_the_pool_leaves_no_executor_thread_running() -> None:
    # A forced exit (a second SIGINT) abandons the pool just before the process exits. An executor
    # thread still closing its wake-up pipe then raced CPython 3.11's exit hook, which writes to
    # that pipe: "OSError: Bad file descriptor" and a traceback at exit, now and then.
    async def run() -> None:
        pool = ComputePool(2, compute_timeout_s=60)
        await pool.start()
        running = asyncio.ensure_future(pool.run(time.sleep, 60))
        await asyncio.sleep(0.2)  # let a worker take the job
        pool.abandon()
        assert not [thread for thread in threading.enumerate() if isinstance(thread, _ExecutorManagerThread)]
        # Its worker killed, the job is not retried on a pool rebuilt behind the exit's back.
        with pytest.raises(PoolUnavailable, match="shut down"):
            await running
        await asyncio.sleep(0.5)  # a rebuild would be warm by now
        assert not pool.ready

    asyncio.run(run())
