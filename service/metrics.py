"""Prometheus metrics: RED for HTTP, the compute pool, payload sizes and build info.

One process (WEB_CONCURRENCY=1) keeps its values in memory and renders its own registry. Several
uvicorn workers run prometheus-client's multiprocess mode: the CLI points PROMETHEUS_MULTIPROC_DIR
at a clean directory before prometheus_client is first imported, every worker writes its values
to files there, and a scrape merges the files with MultiProcessCollector.
"""

from __future__ import annotations

import os
import platform
import socket
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from compute.dispatch import Mode
from service import __version__

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
COUNT_BUCKETS = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
UNMATCHED_ROUTE = "<unmatched>"
# Any token is a valid HTTP method; anything else shares one label value so scanners cannot
# create series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
OTHER_METHOD = "OTHER"

# The *_created series double the exposition for no operational use.
disable_created_metrics()


def multiprocess_dir() -> str | None:
    """The directory shared by the worker processes, when running several."""
    return os.environ.get(MULTIPROC_DIR_ENV)


class Metrics:
    """All of the service's metrics, on a registry of their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, revision: str = "unknown") -> None:
        self.shared_dir = multiprocess_dir()
        self.registry = registry = CollectorRegistry()
        if self.shared_dir is None:
            # In multiprocess mode these are rendered per worker by WorkerProcessCollector instead.
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
            "http_request_size_bytes",
            "Request body sizes.",
            ["method", "route"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.response_size = Histogram(
            "http_response_size_bytes",
            "Response body sizes.",
            ["method", "route"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.problems = Counter(
            "http_problems_total",
            "Problem (error) responses by status and type.",
            ["status", "type"],
            registry=registry,
        )
        self.jobs = Counter(
            "analysis_jobs_total",
            "Analyses by where they ran and how they ended.",
            ["mode", "outcome"],
            registry=registry,
        )
        self.job_duration = Histogram(
            "analysis_duration_seconds",
            "Decode and analysis time, including any pool round trip.",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "analysis_pool_queue_depth",
            "Jobs waiting for a free worker.",
            registry=registry,
            multiprocess_mode="livesum",
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
            "analysis_requests_shed_total",
            "Requests refused with 503 because too many jobs were pending.",
            registry=registry,
        )
        self.payload_numbers = Histogram(
            "analysis_payload_numbers", "Numbers per analysed payload.", buckets=COUNT_BUCKETS, registry=registry
        )
        self.payload_text_chars = Histogram(
            "analysis_payload_text_chars",
            "Text characters per analysed payload.",
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        # livemin: with several workers the service is ready only when every live worker is.
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
        # Labelled children per (method, route, status): .labels() costs a lock and a dict lookup
        # per metric, on every request.
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram, Histogram, Histogram]] = {}
        self._job_children: dict[tuple[Mode, str], tuple[Counter, Histogram]] = {}

    def render(self) -> bytes:
        if self.shared_dir is None:
            return generate_latest(self.registry)
        # Workers are children of the uvicorn supervisor.
        return render_shared(self.shared_dir, supervisor_pid=os.getppid())

    def observe_request(self, method: str, route: str, status: int, seconds: float, received: int, sent: int) -> None:
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = self._new_request_children(method, route, status)
        requests, duration, request_size, response_size = children
        requests.inc()
        duration.observe(seconds)
        request_size.observe(received)
        response_size.observe(sent)

    def _new_request_children(
        self, method: str, route: str, status: int
    ) -> tuple[Counter, Histogram, Histogram, Histogram]:
        return (
            self.requests.labels(method, route, str(status)),
            self.request_duration.labels(method, route),
            self.request_size.labels(method, route),
            self.response_size.labels(method, route),
        )

    # DispatchObserver

    def job_done(self, mode: Mode, outcome: str, seconds: float) -> None:
        children = self._job_children.get((mode, outcome))
        if children is None:
            children = self._job_children[mode, outcome] = (
                self.jobs.labels(mode.value, outcome),
                self.job_duration.labels(mode.value),
            )
        jobs, duration = children
        jobs.inc()
        duration.observe(seconds)

    def pending_changed(self, pending: int, workers: int) -> None:
        self.busy_workers.set(min(pending, workers))
        self.queue_depth.set(max(pending - workers, 0))

    def shed_one(self) -> None:
        self.shed.inc()

    def pool_restarted(self) -> None:
        self.pool_restarts.inc()


def render_shared(shared_dir: str, supervisor_pid: int) -> bytes:
    """Merge every worker's files, plus process metrics of the supervisor and its workers."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=shared_dir)
    registry.register(WorkerProcessCollector(supervisor_pid))
    return generate_latest(registry)


class WorkerProcessCollector:
    """process_* metrics of the supervisor and of each worker process, labelled by ``pid``.

    A sum over processes would look like a counter reset whenever a worker is replaced; one
    series per process does not, and ``sum without (pid) (...)`` still gives the service's total.
    """

    def __init__(self, supervisor_pid: int) -> None:
        self.supervisor_pid = supervisor_pid

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for pid in (self.supervisor_pid, *children_of(self.supervisor_pid)):
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                target = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    target.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        return merged.values()


def children_of(parent: int, proc: Path = Path("/proc")) -> list[int]:
    children = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name may contain spaces or ")": the parent PID is the 2nd field after it.
            after_name = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(after_name[1]) == parent and after_name[0] != b"Z":
            children.append(int(entry.name))
    return sorted(children)


class MetricsListener:
    """GET /metrics on a port of its own, answered from a daemon thread.

    Bound at construction, so a taken port fails start-up at once; ``serve`` starts answering.
    """

    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("MetricsHTTPServer", (ThreadingHTTPServer,), {"address_family": family})
        self._server = server_class((host, port), _MetricsHandler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def serve(self, render: Callable[[], bytes]) -> None:
        self._server.render = render  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-listener", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


class _MetricsHandler(BaseHTTPRequestHandler):
    server_version = "metrics"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.split("?", 1)[0] != "/metrics":
            self._answer(404, b"Not Found: the metrics are at /metrics\n", "text/plain; charset=utf-8")
            return
        render: Callable[[], bytes] = self.server.render  # type: ignore[attr-defined]
        self._answer(200, render(), CONTENT_TYPE_LATEST)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Scrapes are not worth a log line each."""
