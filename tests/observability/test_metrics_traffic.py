"""The lock-free per-request metrics render exactly what prometheus_client's own types render."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, generate_latest

from service.metrics import LATENCY_BUCKETS, SIZE_BUCKETS, LoopTraffic, SharedTraffic

ROUTES = ("/payload", "/health", "<unmatched>")
METHODS = ("POST", "GET", "BREW")  # BREW is no HTTP method: it must share the OTHER label
MODES = ("inline", "thread", "process")


def record(traffic: LoopTraffic | SharedTraffic, rng: random.Random) -> None:
    # Values on the bucket bounds, between them, above all of them, and zero.
    durations = [*LATENCY_BUCKETS, 0.0, 0.0003, 0.07, 45.0]
    sizes = [*SIZE_BUCKETS, 0, 1, 99, 150_000_000]
    for _ in range(400):
        traffic.request_started()
        traffic.request_finished(
            rng.choice(METHODS),
            rng.choice(ROUTES),
            rng.choice((200, 404, 422, 503)),
            rng.choice(durations),
            rng.choice(sizes),
            rng.choice(sizes),
        )
        traffic.job_done(rng.choice(MODES), rng.choice(("ok", "invalid", "timeout")), rng.choice(durations))
        traffic.payload(rng.randint(1, 2_000_000), rng.choice(sizes))
    for _ in range(3):
        traffic.request_started()  # still in flight


def rendered(traffic_type: type[LoopTraffic] | type[SharedTraffic]) -> str:
    registry = CollectorRegistry()
    if traffic_type is LoopTraffic:
        traffic = LoopTraffic()
        registry.register(traffic)  # type: ignore[arg-type]
    else:
        traffic = SharedTraffic(registry)
    record(traffic, random.Random(7))
    return generate_latest(registry).decode()


def test_loop_traffic_renders_what_prometheus_client_renders() -> None:
    loop, shared = rendered(LoopTraffic), rendered(SharedTraffic)
    assert 'method="OTHER"' in loop
    assert "http_requests_in_flight 3.0" in loop
    assert loop == shared


def test_an_idle_service_renders_the_same_empty_families() -> None:
    loop_registry, shared_registry = CollectorRegistry(), CollectorRegistry()
    loop_registry.register(LoopTraffic())  # type: ignore[arg-type]
    SharedTraffic(shared_registry)
    assert generate_latest(loop_registry) == generate_latest(shared_registry)
