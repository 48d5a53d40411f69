"""Prometheus metrics: RED for HTTP, the compute pool, payload sizes and build info."""

from __future__ import annotations

import platform

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from compute.dispatch import Mode
from service import __version__

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
COUNT_BUCKETS = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
UNMATCHED_ROUTE = "<unmatched>"

# The *_created series double the exposition for no operational use.
disable_created_metrics()


class Metrics:
    """All of the service's metrics, on a registry of their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, revision: str = "unknown") -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.requests = Counter(
            "http_requests_total", "HTTP requests answered.", ["method", "route", "status"], registry=registry
        )
        self.request_duration = Histogram(
            "http_request_duration_seconds",
            "Time from request start to the end of the response.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "http_requests_in_flight", "HTTP requests being handled.", registry=registry, multiprocess_mode="livesum"
        )
        self.request_size = Histogram(
            "http_request_size_bytes", "Request body sizes.", ["method", "route"], buckets=SIZE_BUCKETS, registry=registry
        )
        self.response_size = Histogram(
            "http_response_size_bytes", "Response body sizes.", ["method", "route"], buckets=SIZE_BUCKETS, registry=registry
        )
        self.problems = Counter(
            "http_problems_total", "Problem (error) responses by status and type.", ["status", "type"], registry=registry
        )
        self.jobs = Counter(
            "analysis_jobs_total", "Analyses by where they ran and how they ended.", ["mode", "outcome"], registry=registry
        )
        self.job_duration = Histogram(
            "analysis_duration_seconds",
            "Decode and analysis time, including any pool round trip.",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "analysis_pool_queue_depth", "Jobs waiting for a free worker.", registry=registry, multiprocess_mode="livesum"
        )
        self.busy_workers = Gauge(
            "analysis_pool_busy_workers", "Workers running a job.", registry=registry, multiprocess_mode="livesum"
        )
        self.pool_workers = Gauge(
            "analysis_pool_workers", "Workers in the compute pool.", registry=registry, multiprocess_mode="livesum"
        )
        self.pool_restarts = Counter(
            "analysis_pool_restarts_total", "Times the pool was rebuilt after a worker died or hung.", registry=registry
        )
        self.shed = Counter(
            "analysis_requests_shed_total", "Requests refused with 503 because too many jobs were pending.", registry=registry
        )
        self.payload_numbers = Histogram(
            "analysis_payload_numbers", "Numbers per analysed payload.", buckets=COUNT_BUCKETS, registry=registry
        )
        self.payload_text_chars = Histogram(
            "analysis_payload_text_chars", "Text characters per analysed payload.", buckets=SIZE_BUCKETS, registry=registry
        )
        self.ready = Gauge(
            "service_ready", "1 when /ready answers 200.", registry=registry, multiprocess_mode="livemin"
        )
        self.build_info = Gauge(
            "build_info",
            "Always 1; labels carry the build.",
            ["version", "revision", "python"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.build_info.labels(__version__, revision, platform.python_version()).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # DispatchObserver

    def job_done(self, mode: Mode, outcome: str, seconds: float) -> None:
        self.jobs.labels(mode.value, outcome).inc()
        self.job_duration.labels(mode.value).observe(seconds)

    def pending_changed(self, pending: int, workers: int) -> None:
        self.busy_workers.set(min(pending, workers))
        self.queue_depth.set(max(pending - workers, 0))

    def shed_one(self) -> None:
        self.shed.inc()

    def pool_restarted(self) -> None:
        self.pool_restarts.inc()
