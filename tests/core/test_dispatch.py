"""Adaptive dispatch: small bodies inline, large ones to the pool, a large one alone inline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bench._common import make_body
from compute.analysis import analyze_body
from compute.dispatch import Dispatch, Dispatcher, Mode
from compute.pool import PoolUnavailable
from compute.schema import Limits

THRESHOLD = 1_000
ALONE_THRESHOLD = 20_000
LARGE = make_body(500, 5_000)  # between the two thresholds
HUGE = make_body(2_000, 20_000)  # past both


class Recorder:
    def __init__(self) -> None:
        self.modes: list[Mode] = []

    def job_done(self, mode: Mode, outcome: str, seconds: float) -> None:
        self.modes.append(mode)

    def pending_changed(self, pending: int) -> None:
        pass

    def handed_off_changed(self, jobs: int, workers: int) -> None:
        pass

    def shed_one(self) -> None:
        pass

    def pool_restarted(self) -> None:
        pass


def with_dispatcher(dispatch: Dispatch, test: Callable[[Dispatcher, Recorder], Awaitable[None]]) -> Recorder:
    recorder = Recorder()

    async def run() -> None:
        dispatcher = Dispatcher(
            dispatch,
            Limits(),
            workers=2,
            max_pending=8,
            inline_threshold_bytes=THRESHOLD,
            inline_alone_threshold_bytes=ALONE_THRESHOLD,
            compute_timeout_s=60,
            observer=recorder,
        )
        await dispatcher.start()
        try:
            await test(dispatcher, recorder)
        finally:
            await dispatcher.shutdown()

    asyncio.run(run())
    return recorder


async def analyze(dispatcher: Dispatcher, body: bytes) -> None:
    """What the payload route does: hold a place, (read the body,) analyse."""
    mode = dispatcher.mode_for(len(body))
    with dispatcher.reserve(mode):
        await dispatcher.analyze(body, mode)


def test_sizes_decide_the_mode_before_the_body_is_read() -> None:
    async def test(dispatcher: Dispatcher, recorder: Recorder) -> None:
        assert len(LARGE) > THRESHOLD and len(HUGE) > ALONE_THRESHOLD
        assert dispatcher.mode_for(THRESHOLD) is Mode.INLINE
        assert dispatcher.mode_for(THRESHOLD + 1) is Mode.PROCESS
        assert dispatcher.mode_for(None) is Mode.PROCESS  # chunked: size unknown

    with_dispatcher(Dispatch.ADAPTIVE, test)


def test_a_large_body_alone_is_analysed_inline_and_a_huge_one_in_the_pool() -> None:
    async def test(dispatcher: Dispatcher, recorder: Recorder) -> None:
        await analyze(dispatcher, LARGE)
        await analyze(dispatcher, HUGE)

    assert with_dispatcher(Dispatch.ADAPTIVE, test).modes == [Mode.INLINE, Mode.PROCESS]


@pytest.mark.parametrize("other", [LARGE, make_body(5, 100)], ids=["large", "small"])
def test_a_large_body_goes_to_the_pool_while_another_request_is_in_progress(other: bytes) -> None:
    async def test(dispatcher: Dispatcher, recorder: Recorder) -> None:
        with dispatcher.reserve(dispatcher.mode_for(len(other))):  # its body still arriving
            await analyze(dispatcher, LARGE)
        await analyze(dispatcher, LARGE)  # alone again

    assert with_dispatcher(Dispatch.ADAPTIVE, test).modes == [Mode.PROCESS, Mode.INLINE]


def test_concurrent_large_bodies_share_the_pool() -> None:
    async def test(dispatcher: Dispatcher, recorder: Recorder) -> None:
        async def request() -> None:
            mode = dispatcher.mode_for(len(LARGE))
            with dispatcher.reserve(mode):
                await asyncio.sleep(0.01)  # the bodies arrive together
                await dispatcher.analyze(LARGE, mode)

        await asyncio.gather(*(request() for _ in range(4)))

    assert with_dispatcher(Dispatch.ADAPTIVE, test).modes == [Mode.PROCESS] * 4


def test_requests_whose_bodies_are_already_in_are_not_each_alone() -> None:
    # Over HTTP, a body that arrived whole is read without a single await that suspends, so the
    # requests parsed in the same pass of the event loop would otherwise run one after another,
    # each finding itself alone, and all inline: 97 % of 233 KB jobs at 4 connections did.
    async def test(dispatcher: Dispatcher, recorder: Recorder) -> None:
        await asyncio.gather(*(analyze(dispatcher, LARGE) for _ in range(4)))

    assert with_dispatcher(Dispatch.ADAPTIVE, test).modes == [Mode.PROCESS] * 4


@pytest.mark.parametrize("dispatch", [Dispatch.PROCESS, Dispatch.THREAD])
def test_a_fixed_mode_is_kept_for_a_body_alone(dispatch: Dispatch) -> None:
    async def test(dispatcher: Dispatcher, recorder: Recorder) -> None:
        await analyze(dispatcher, LARGE)

    assert with_dispatcher(dispatch, test).modes == [Mode(dispatch.value)]


def test_a_chunked_body_streams_into_a_slot_and_runs_inline_when_alone_and_small_enough() -> None:
    # Its size is unknown until its end, so it is written into a pool slot as it arrives; alone
    # and under the alone threshold it is copied out and analysed inline, else in the pool.
    async def chunked(dispatcher: Dispatcher, body: bytes) -> None:
        mode = dispatcher.mode_for(None)
        with dispatcher.reserve(mode):
            assert dispatcher.streams(None, mode)
            async with dispatcher.receiving(None) as arriving:
                for start in range(0, len(body), 777):
                    arriving.append(body[start : start + 777])
                analysis = await dispatcher.analyze(arriving.shared(), mode)
        assert (analysis.numeric_analysis, analysis.text_analysis) == analyze_body(body, Limits())

    async def test(dispatcher: Dispatcher, recorder: Recorder) -> None:
        await chunked(dispatcher, LARGE)
        await chunked(dispatcher, HUGE)
        with dispatcher.reserve(dispatcher.mode_for(len(LARGE))):  # another body still arriving
            await chunked(dispatcher, LARGE)

    assert with_dispatcher(Dispatch.ADAPTIVE, test).modes == [Mode.INLINE, Mode.PROCESS, Mode.PROCESS]


@pytest.mark.parametrize("dispatch", [Dispatch.ADAPTIVE, Dispatch.PROCESS, Dispatch.THREAD])
def test_a_job_after_the_shutdown_is_refused_as_pool_unavailable(dispatch: Dispatch) -> None:
    async def test(dispatcher: Dispatcher, recorder: Recorder) -> None:
        await dispatcher.shutdown()
        with pytest.raises(PoolUnavailable, match="shut down"):
            await analyze(dispatcher, HUGE)
        if dispatch is Dispatch.ADAPTIVE:
            await analyze(dispatcher, make_body(5, 100))  # a small body still runs inline

    expected = [Mode.PROCESS, Mode.INLINE] if dispatch is Dispatch.ADAPTIVE else [Mode(dispatch.value)]
    assert with_dispatcher(dispatch, test).modes == expected
