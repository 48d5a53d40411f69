"""Minutes of mixed load: memory and file descriptors stay flat (pytest -m soak)."""

from __future__ import annotations

import itertools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bench.proctree import tree_rss_bytes
from tests.conftest import scrape_metric
from tests.reliability.helpers import JSON, numbers_body, open_fds

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "180"))
WARM_UP_FRACTION = 0.25  # allocator and caches settle first; growth is measured after that
RSS_GROWTH_LIMIT_KIB = 64 * 1024
FD_GROWTH_LIMIT = 5


@pytest.mark.soak
def test_mixed_load_leaves_memory_and_descriptors_flat(start_service, record_property) -> None:
    service = start_service(env={"POOL_WORKERS": "2"})
    mix = itertools.cycle(
        [
            ("POST", "/payload", numbers_body(5)),  # inline
            ("POST", "/payload", numbers_body(40_000)),  # pool, or inline when no other request is in
            ("POST", "/payload", b'{"numbers": [1], "text": ""}'),  # 422
            ("POST", "/payload", b'{"numbers": [1, '),  # 400
            ("GET", "/metrics", None),
            ("POST", "/payload", numbers_body(5)),
            ("GET", "/nowhere", None),  # 404
            ("POST", "/payload", numbers_body(200_000)),  # large
        ]
    )
    lock = threading.Lock()
    deadline = time.monotonic() + SOAK_SECONDS
    counts: dict[int, int] = {}

    def client() -> None:
        with httpx.Client(base_url=service.url, timeout=60) as http:
            while time.monotonic() < deadline:
                with lock:
                    method, path, body = next(mix)
                response = http.request(method, path, content=body, headers=JSON if body else None)
                with lock:
                    counts[response.status_code] = counts.get(response.status_code, 0) + 1

    samples: list[tuple[float, int, int]] = []
    with ThreadPoolExecutor(4) as executor:
        loads = [executor.submit(client) for _ in range(4)]
        while time.monotonic() < deadline:
            samples.append((time.monotonic(), tree_rss_bytes(service.pid) // 1024, open_fds(service.pid)))
            time.sleep(5)
        for load in loads:
            load.result(timeout=120)

    assert set(counts) <= {200, 400, 404, 422, 503}, counts
    assert counts.get(503, 0) == 0, "four clients never exceed MAX_PENDING"
    settled = [sample for sample in samples if sample[0] >= samples[0][0] + SOAK_SECONDS * WARM_UP_FRACTION]
    rss_growth = max(s[1] for s in settled) - settled[0][1]
    fd_growth = max(s[2] for s in settled) - settled[0][2]
    figures = {
        "seconds": SOAK_SECONDS,
        "requests": sum(counts.values()),
        "statuses": counts,
        "rss_mib_first_settled_last": [samples[0][1] // 1024, settled[0][1] // 1024, samples[-1][1] // 1024],
        "rss_growth_mib": rss_growth // 1024,
        "fds_first_settled_last": [samples[0][2], settled[0][2], samples[-1][2]],
        "restarts": scrape_metric(service.url, "analysis_pool_restarts_total"),
    }
    record_property("soak", figures)
    print(figures)
    assert rss_growth < RSS_GROWTH_LIMIT_KIB, figures
    assert fd_growth <= FD_GROWTH_LIMIT, figures
    assert figures["restarts"] == 0
