"""A burst far past capacity of the largest payloads: shed with 503 + Retry-After, bounded memory,
ready again at once, and no memory left behind after repeated bursts."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bench.proctree import PeakRss, rss_bytes, tree_rss_bytes
from tests.conftest import scrape_metric, wait_until
from tests.reliability.helpers import JSON, assert_problem, numbers_body

BURST = 32  # 4 x MAX_PENDING with the default 2 workers on CI
BURSTS = 4  # the first fills the allocators' high-water marks; the last three are compared
RSS_LIMIT_KIB = 1024 * 1024  # 1 GiB for the whole process tree
# The server process's heap grows to a plateau during the first burst or two (glibc keeps freed
# body buffers), then stays flat; a leak would grow with every burst.
LEAK_TOLERANCE_KIB = 64 * 1024


def _burst(url: str, body: bytes) -> list[tuple[int, float, str | None]]:
    def one(_: int) -> tuple[int, float, str | None]:
        started = time.monotonic()
        response = httpx.post(f"{url}/payload", content=body, headers=JSON, timeout=120)
        if response.status_code != 200:
            assert_problem(response, 503)
            assert response.headers["x-problem-type"] == "overloaded"
            return 503, time.monotonic() - started, response.headers.get("retry-after")
        return 200, time.monotonic() - started, None

    with ThreadPoolExecutor(BURST) as executor:
        return list(executor.map(one, range(BURST)))


@pytest.mark.slow
def test_bursts_of_the_largest_payloads_are_shed_with_bounded_memory(start_service, record_property) -> None:
    service = start_service()  # default limits: 1,000,000 numbers, MAX_PENDING = 4 x workers
    body = numbers_body(1_000_000)
    figures = {"rss_idle_mib": tree_rss_bytes(service.pid) // 1024 // 1024}
    settled_kib = []
    for burst in range(1, BURSTS + 1):
        with PeakRss(service.pid) as rss:
            answers = _burst(service.url, body)
        accepted = [seconds for status, seconds, _ in answers if status == 200]
        shed = [retry for status, _, retry in answers if status == 503]
        assert accepted, "nothing was accepted"
        assert shed, "a burst of 4 x MAX_PENDING was not shed"
        assert all(retry is not None and int(retry) >= 1 for retry in shed)
        assert rss.peak // 1024 < RSS_LIMIT_KIB, f"peak RSS {rss.peak // 2**20} MiB"
        ready_after = time.monotonic()
        wait_until(lambda: httpx.get(f"{service.url}/ready").status_code == 200, timeout=5, message="/ready")
        figures[f"burst{burst}"] = {
            "accepted": len(accepted),
            "shed": len(shed),
            "accepted_max_s": round(max(accepted), 2),
            "peak_rss_mib": rss.peak // 2**20,
            "ready_after_s": round(time.monotonic() - ready_after, 3),
        }
        wait_until(
            lambda: scrape_metric(service.url, "analysis_pool_busy_workers") == 0, timeout=10, message="idle pool"
        )
        time.sleep(1)  # let freed memory settle before sampling it
        settled_kib.append(tree_rss_bytes(service.pid) // 1024)
    figures["rss_settled_mib"] = [kib // 1024 for kib in settled_kib]
    figures["server_rss_mib"] = rss_bytes(service.pid) // 2**20
    record_property("overload", figures)
    print(figures)
    assert settled_kib[-1] - settled_kib[1] < LEAK_TOLERANCE_KIB, figures
    assert scrape_metric(service.url, "analysis_pool_queue_depth") == 0
    assert scrape_metric(service.url, "http_requests_in_flight") == 1  # the scrape itself
    assert scrape_metric(service.url, "analysis_requests_shed_total") == sum(
        figures[f"burst{b}"]["shed"] for b in range(1, BURSTS + 1)
    )
