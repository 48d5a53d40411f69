"""Bodies reach pool workers through shared-memory slots, intact, one slot per job in flight."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import msgspec
import pytest

from bench._common import make_body
from compute.analysis import analyze_body
from compute.handoff import BodySlots, analyze_shared, slots_for
from compute.memory import HUGE_BODY_BYTES
from compute.pool import ComputePool
from compute.schema import Limits
from service.config import Settings
from tests.conftest import metric_value


def slot_sizes() -> list[int]:
    """The sizes of this process's body slots (memfds, each open once or twice: mmap dups its fd)."""
    sizes = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "sre-microservice-body" in os.readlink(f"/proc/self/fd/{fd}"):
                status = Path(f"/proc/self/fd/{fd}").stat()
                sizes[status.st_ino] = status.st_size
        except FileNotFoundError:  # the fd listing the directory itself is gone already
            continue
    return sorted(sizes.values())


async def with_pool(test) -> None:  # type: ignore[no-untyped-def]
    pool = ComputePool(2, compute_timeout_s=60)
    await pool.start()
    try:
        slots = await slots_for(pool)
        assert slots is not None, "workers here can read the service's slots"
        try:
            await test(pool, slots)
        finally:
            slots.close()
    finally:
        await pool.shutdown()


def test_bodies_of_every_size_arrive_intact_and_one_slot_serves_them_in_turn() -> None:
    limits = Limits()
    sizes = [(5, 100), (100_000, 1_000_000), (10, 160), (5, 100)]
    bodies = [make_body(numbers, text) for numbers, text in sizes]

    async def test(pool: ComputePool, slots: BodySlots) -> None:
        for body in bodies:
            async with slots.holding(body) as shared:
                assert await pool.run(analyze_shared, shared, limits) == analyze_body(body, limits)
        assert slot_sizes() == [3 << 20]  # grown in 1 MiB steps for the 2.3 MB body, and kept

    asyncio.run(with_pool(test))


def test_a_body_that_fits_a_kept_slot_is_copied_in_without_leaving_the_event_loop() -> None:
    limits = Limits()
    first, second = make_body(10_000, 100_000), make_body(9_000, 90_000)

    async def test(pool: ComputePool, slots: BodySlots) -> None:
        async with slots.holding(first) as shared:  # a new slot: its pages are written by a thread
            assert await pool.run(analyze_shared, shared, limits) == analyze_body(first, limits)
        turns = 0

        async def count_turns() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        counter = asyncio.create_task(count_turns())
        await asyncio.sleep(0)
        before = turns
        async with slots.holding(second) as shared:
            assert turns == before, "the copy into a slot that holds the body needs no await"
            assert await pool.run(analyze_shared, shared, limits) == analyze_body(second, limits)
        counter.cancel()

    asyncio.run(with_pool(test))


def test_a_slot_that_grew_past_what_is_kept_is_emptied_after_its_job() -> None:
    limits = Limits()
    large, small = make_body(300_000, 3_000_000), make_body(5, 100)
    assert len(large) > HUGE_BODY_BYTES

    async def test(pool: ComputePool, slots: BodySlots) -> None:
        async with slots.holding(large) as shared:
            assert await pool.run(analyze_shared, shared, limits) == analyze_body(large, limits)
        for _ in range(200):  # emptied by a thread, then free again
            if slot_sizes() == [0]:
                break
            await asyncio.sleep(0.01)
        assert slot_sizes() == [0]
        async with slots.holding(small) as shared:  # the emptied slot grows again; workers remap it
            assert await pool.run(analyze_shared, shared, limits) == analyze_body(small, limits)
        assert max(slot_sizes()) == 1 << 20

    asyncio.run(with_pool(test))


def test_a_job_that_comes_while_a_slot_is_being_emptied_waits_for_it_instead_of_adding_a_slot() -> None:
    # Otherwise every slot being emptied when a job arrives adds one for good, past MAX_PENDING
    # slots (and their kept pages) in all.
    limits = Limits()
    large, small = make_body(300_000, 3_000_000), make_body(5, 100)
    assert len(large) > HUGE_BODY_BYTES

    async def test(pool: ComputePool, slots: BodySlots) -> None:
        for body in (large, small, large, large, small):  # each at once after the one before
            async with slots.holding(body) as shared:
                assert await pool.run(analyze_shared, shared, limits) == analyze_body(body, limits)
        assert len(slot_sizes()) == 1, "one job at a time needs one slot"

    asyncio.run(with_pool(test))


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_written_in_as_it_arrives_reaches_the_worker_intact(declared: bool) -> None:
    # Pieces of the sizes the HTTP server hands over, into new, reused, grown and emptied slots;
    # a chunked body's slot grows as its pieces come.
    limits = Limits()
    bodies = [make_body(300_000, 3_000_000), make_body(100_000, 1_000_000), make_body(400_000, 4_000_000)]
    assert len(bodies[0]) > HUGE_BODY_BYTES and len(bodies[1]) <= HUGE_BODY_BYTES

    async def test(pool: ComputePool, slots: BodySlots) -> None:
        for body in bodies:
            async with slots.receiving(len(body) if declared else None) as arriving:
                for start in range(0, len(body), 100_003):
                    arriving.append(body[start : start + 100_003])
                assert await pool.run(analyze_shared, arriving.shared(), limits) == analyze_body(body, limits)
        async with slots.holding(bodies[1]) as shared:  # the slot as filled whole, after all that
            assert await pool.run(analyze_shared, shared, limits) == analyze_body(bodies[1], limits)
        assert len(slot_sizes()) == 1, "one job at a time needs one slot"

    asyncio.run(with_pool(test))


def service_peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_large_body_for_the_pool_never_exists_whole_in_the_service(start_service, chunked: bool) -> None:
    # Joining a 17.5 MB body on the event loop faulted in its fresh pages there, 11-15 ms during
    # which /health waited (P3). Written into its slot as it arrives, the body never takes the
    # service's own memory: its peak grows by a fraction of the body, not by the body. So does a
    # chunked one, whose slot grows as it arrives.
    service = start_service(env={"POOL_WORKERS": "1"})
    body = make_body(1_000_000, 1_000_000)
    assert len(body) > HUGE_BODY_BYTES
    content = (body[start : start + 65_536] for start in range(0, len(body), 65_536)) if chunked else body
    with httpx.Client(base_url=service.url, timeout=60) as client:
        for _ in range(2):  # warm: the first job also maps the slot in the worker, imports settle
            assert (
                client.post(
                    "/payload", content=make_body(10, 160), headers={"content-type": "application/json"}
                ).status_code
                == 200
            )
        before = service_peak_rss_kib(service.pid)
        response = client.post("/payload", content=content, headers={"content-type": "application/json"})
        after = service_peak_rss_kib(service.pid)
        metrics = client.get("/metrics").text
    assert response.status_code == 200, response.text
    expected = analyze_body(body, Limits())
    assert response.json()["numeric_analysis"] == msgspec.to_builtins(expected[0])
    assert response.json()["text_analysis"] == msgspec.to_builtins(expected[1])
    assert metric_value(metrics, "analysis_jobs_total", mode="process", outcome="ok") == 1
    assert (after - before) * 1024 < len(body) // 4, f"the service's peak grew by {after - before} KiB"


def test_concurrent_jobs_each_read_their_own_body() -> None:
    limits = Limits()
    bodies = [make_body(1_000 * (index + 1), 10_000 * (index + 1)) for index in range(6)]

    async def test(pool: ComputePool, slots: BodySlots) -> None:
        async def job(body: bytes):  # type: ignore[no-untyped-def]
            async with slots.holding(body) as shared:
                return await pool.run(analyze_shared, shared, limits)

        for _ in range(3):
            results = await asyncio.gather(*(job(body) for body in bodies))
            assert results == [analyze_body(body, limits) for body in bodies]
        assert len(slot_sizes()) == len(bodies)

    asyncio.run(with_pool(test))


def test_an_empty_or_invalid_body_gets_the_same_verdict_as_inline() -> None:
    limits = Limits()

    async def test(pool: ComputePool, slots: BodySlots) -> None:
        for body in (b"", b"{", b'{"numbers": [1], "text": 5}'):
            try:
                analyze_body(body, limits)
            except ValueError as inline_error:
                expected = repr(inline_error)
            async with slots.holding(body) as shared:
                try:
                    await pool.run(analyze_shared, shared, limits)
                except ValueError as pooled_error:
                    assert repr(pooled_error) == expected
                else:
                    raise AssertionError(f"{body!r} was accepted by the worker")

    asyncio.run(with_pool(test))


@pytest.mark.skipif(os.geteuid() != 0, reason="unmounting /proc in a private mount namespace needs root")
def test_where_workers_cannot_open_the_slots_bodies_go_through_the_pipe(start_service) -> None:
    # Without /proc the workers cannot reach the service's memfds: the fallback, for real.
    hide_proc = ("unshare", "--mount", "--propagation", "private", "sh", "-c", 'umount -l /proc && exec "$@"', "sh")
    service = start_service(env={"POOL_WORKERS": "2", "INLINE_ALONE_THRESHOLD_BYTES": "0"}, prefix=hide_proc)
    assert "bodies go through the pipe" in service.log()
    bodies = [make_body(numbers, 10_000) for numbers in (40_000, 50_000, 60_000)]
    assert min(map(len, bodies)) > Settings().inline_threshold_bytes  # all for the pool
    with httpx.Client(base_url=service.url, timeout=30) as client, ThreadPoolExecutor(len(bodies)) as senders:
        responses = list(
            senders.map(
                lambda body: client.post("/payload", content=body, headers={"content-type": "application/json"}),
                bodies,
            )
        )
        metrics = client.get("/metrics").text
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        expected = analyze_body(body, Limits())
        assert response.json()["numeric_analysis"] == msgspec.to_builtins(expected[0])
        assert response.json()["text_analysis"] == msgspec.to_builtins(expected[1])
    assert metric_value(metrics, "analysis_jobs_total", mode="process", outcome="ok") == len(bodies)
