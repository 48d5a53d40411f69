"""Slow, broken and greedy clients on raw sockets: each is cut off in bounded time, frees what it
held, and never stalls anyone else."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest

from service.http_guards import HEADER_TIMEOUT_S, MAX_HEADER_BYTES
from tests.conftest import scrape_metric, wait_until
from tests.reliability.helpers import numbers_body, open_fds

BODY_TIMEOUT_S = 2.0
# Far past every deadline above: reaching it means a hang.
HANG_S = HEADER_TIMEOUT_S + 20
SLOWLORIS_CONNECTIONS = 50


async def _response(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), HANG_S)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def _problem(response: bytes) -> dict:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    return json.loads(body)


class Scenarios:
    def __init__(self, port: int) -> None:
        self.port = port
        # Built up front: encoding them inside the run would block the probe's event loop.
        self.bodies = {count: numbers_body(count) for count in (20_000, 200_000, 300_000)}

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def idle_connections_are_closed(self) -> None:
        connections = [await self.connect() for _ in range(SLOWLORIS_CONNECTIONS)]
        for reader, _ in connections:
            assert await _response(reader) == b""  # closed without a word

    async def trickled_headers_get_408(self) -> None:
        reader, writer = await self.connect()
        request = b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"x-slow: " + b"a" * 200
        for byte in request:
            if writer.is_closing() or reader.at_eof():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.1)
            if reader._buffer:  # noqa: SLF001 - the answer came: stop trickling
                break
        response = await _response(reader)
        assert _status(response) == 408
        assert _problem(response)["type"] == "/problems/request-timeout"

    async def a_head_stalled_behind_an_answer_gets_408(self) -> None:
        # The answer arms uvicorn's keep-alive timeout (5 s); the head's own deadline must win.
        reader, writer = await self.connect()
        writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\nGET /health HTTP/1.1\r\nhost: x")
        await writer.drain()
        response = await _response(reader)
        assert _status(response) == 200
        assert b"HTTP/1.1 408 " in response
        assert b"/problems/request-timeout" in response

    async def oversized_headers_get_431(self) -> None:
        reader, writer = await self.connect()
        writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (2 * MAX_HEADER_BYTES) + b"\r\n\r\n")
        await writer.drain()
        response = await _response(reader)
        assert _status(response) == 431
        assert _problem(response)["type"] == "/problems/header-fields-too-large"
        assert re.search(rb"\r\nx-request-id: [0-9a-f]{32}\r\n", response.partition(b"\r\n\r\n")[0])

    async def short_body_gets_408(self, declared: int) -> None:
        reader, writer = await self.connect()
        writer.write(
            b"POST /payload HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: %d\r\n\r\n{"numbers": [1, 2' % declared
        )
        await writer.drain()
        response = await _response(reader)
        assert _status(response) == 408
        assert _problem(response)["type"] == "/problems/request-timeout"

    async def trickled_body_gets_408(self) -> None:
        reader, writer = await self.connect()
        body = self.bodies[20_000]
        writer.write(
            b"POST /payload HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body)
        )
        for start in range(0, len(body), 100):
            if reader._buffer or reader.at_eof():  # noqa: SLF001 - answered: stop sending
                break
            try:
                writer.write(body[start : start + 100])
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.1)
        response = await _response(reader)
        assert _status(response) == 408

    async def pipelined_requests_are_answered_in_order(self) -> None:
        reader, writer = await self.connect()
        payload = json.dumps({"numbers": [1, 2, 3, 4, 5], "text": "Sample text for analysis"}).encode()
        post = (
            b"POST /payload HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(payload) + payload
        )
        writer.write(
            b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n" + post + b"GET /nowhere HTTP/1.1\r\nhost: x\r\n"
            b"connection: close\r\n\r\n"
        )
        await writer.drain()
        responses = await _response(reader)
        statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", responses)]
        assert statuses == [200, 200, 404]
        assert b'"median":3.0' in responses

    async def disconnect_mid_upload(self) -> None:
        _, writer = await self.connect()
        body = self.bodies[200_000]
        writer.write(
            b"POST /payload HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body) + body[: len(body) // 2]
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.transport.abort()

    async def disconnect_before_the_response(self) -> None:
        _, writer = await self.connect()
        body = self.bodies[300_000]
        writer.write(
            b"POST /payload HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        writer.transport.abort()


async def _probe_health(url: str, stop: asyncio.Event) -> list[float]:
    """Latencies of /health, polled while the hostile clients run; a failure raises."""
    latencies = []
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while not stop.is_set():
            started = time.perf_counter()
            response = await client.get("/health")
            assert response.status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.05)
    return latencies


@pytest.mark.slow
def test_hostile_clients_are_cut_off_and_never_stall_others(start_service, record_property) -> None:
    service = start_service(env={"POOL_WORKERS": "2", "BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)})
    wait_until(lambda: scrape_metric(service.url, "http_requests_in_flight") == 1, timeout=5, message="an idle service")
    fds_before = open_fds(service.pid)
    scenarios = Scenarios(service.port)

    async def run() -> list[float]:
        stop = asyncio.Event()
        probe = asyncio.create_task(_probe_health(service.url, stop))
        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(
                scenarios.idle_connections_are_closed(),
                scenarios.trickled_headers_get_408(),
                scenarios.a_head_stalled_behind_an_answer_gets_408(),
                scenarios.oversized_headers_get_431(),
                scenarios.short_body_gets_408(declared=1_000_000),  # large: holds a job slot
                scenarios.short_body_gets_408(declared=1_000),  # small: would run inline
                scenarios.trickled_body_gets_408(),
                scenarios.pipelined_requests_are_answered_in_order(),
                scenarios.disconnect_mid_upload(),
                scenarios.disconnect_before_the_response(),
            ),
            HANG_S * 2,
        )
        record_property("hostile_clients_s", round(time.monotonic() - started, 1))
        stop.set()
        return await probe

    latencies = asyncio.run(run())
    assert len(latencies) > 50
    record_property("health_probes", len(latencies))
    record_property("health_probe_max_ms", round(max(latencies) * 1000, 1))
    # Every slot, counter and socket they held is released.
    wait_until(
        lambda: scrape_metric(service.url, "http_requests_in_flight") == 1, timeout=10, message="in-flight back to 1"
    )
    assert scrape_metric(service.url, "analysis_pool_queue_depth") == 0
    assert scrape_metric(service.url, "analysis_pool_busy_workers") == 0
    wait_until(lambda: open_fds(service.pid) <= fds_before + 2, timeout=10, message="sockets closed")
    assert scrape_metric(service.url, "http_problems_total", status="408", type="request-timeout") >= 4
    # And the service still does its job.
    response = httpx.post(
        f"{service.url}/payload",
        content=numbers_body(100_000),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200
