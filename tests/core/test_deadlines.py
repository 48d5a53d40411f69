"""service.deadlines: coarse deadlines behave like asyncio.timeout."""

from __future__ import annotations

import asyncio

import pytest

from service.deadlines import Deadlines


def test_a_block_that_outlives_its_deadline_raises_timeout_error() -> None:
    deadlines = Deadlines(0.05, resolution_s=0.01)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            with deadlines.within():
                await asyncio.sleep(10)
        # The task is usable afterwards: the cancellation was consumed.
        await asyncio.sleep(0)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        return loop.time() - started

    elapsed = asyncio.run(main())
    assert 0.05 <= elapsed < 5


def test_a_block_that_finishes_in_time_is_untouched_and_the_timer_stops() -> None:
    deadlines = Deadlines(5, resolution_s=0.01)

    async def main() -> str:
        with deadlines.within():
            await asyncio.sleep(0.03)  # several ticks pass
        assert deadlines._due == {}
        await asyncio.sleep(0.03)
        assert deadlines._tick is None
        return "done"

    assert asyncio.run(main()) == "done"


def test_only_expired_tasks_are_cancelled() -> None:
    deadlines = Deadlines(0.05, resolution_s=0.01)
    patient = Deadlines(10, resolution_s=0.01)

    async def slow(watch: Deadlines) -> str:
        try:
            with watch.within():
                await asyncio.sleep(0.2)
        except TimeoutError:
            return "timed out"
        return "finished"

    async def main() -> list[str]:
        return await asyncio.gather(slow(deadlines), slow(patient), slow(deadlines))

    assert asyncio.run(main()) == ["timed out", "finished", "timed out"]


def test_someone_elses_cancellation_is_not_turned_into_a_timeout() -> None:
    deadlines = Deadlines(10, resolution_s=0.01)

    async def main() -> None:
        async def guarded() -> None:
            with deadlines.within():
                await asyncio.sleep(10)

        task = asyncio.create_task(guarded())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
