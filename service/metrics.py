"""Prometheus metrics: RED for HTTP, the compute pool, payload sizes and build info.

One process (WEB_CONCURRENCY=1) keeps its values in memory and renders its own registry; the
values recorded on every request are plain Python numbers there (LoopTraffic), because
prometheus_client's locked values cost a fifth of a small request. Several uvicorn workers run
prometheus-client's multiprocess mode: the CLI points PROMETHEUS_MULTIPROC_DIR at a clean
directory before prometheus_client is first imported, every worker writes its values to files
there (SharedTraffic), and a scrape merges the files with MultiProcessCollector. Both expose the
same families, byte for byte (tests/observability/test_metrics_traffic.py).
"""

from __future__ import annotations

import os
import platform
import socket
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

from compute.dispatch import Mode
from service import __version__

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
COUNT_BUCKETS = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
UNMATCHED_ROUTE = "<unmatched>"
# The lifespan hands the Metrics to uvicorn under this key (its app state), so the HTTP protocol
# can count the requests it refuses before any route sees them.
METRICS_STATE_KEY = "metrics"
# Any token is a valid HTTP method; anything else shares one label value so scanners cannot
# create series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
OTHER_METHOD = "OTHER"

# The *_created series double the exposition for no operational use.
disable_created_metrics()


@dataclass(frozen=True)
class Family:
    """A metric recorded on every request: its name, help, labels and (for a histogram) buckets."""

    name: str
    documentation: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


REQUESTS = Family("http_requests_total", "HTTP requests answered.", ("method", "route", "status"))
REQUEST_DURATION = Family(
    "http_request_duration_seconds",
    "Time from request start to the end of the response.",
    ("method", "route"),
    LATENCY_BUCKETS,
)
REQUEST_SIZE = Family("http_request_size_bytes", "Request body sizes.", ("method", "route"), SIZE_BUCKETS)
RESPONSE_SIZE = Family("http_response_size_bytes", "Response body sizes.", ("method", "route"), SIZE_BUCKETS)
IN_FLIGHT = Family("http_requests_in_flight", "HTTP requests being handled.")
JOBS = Family("analysis_jobs_total", "Analyses by where they ran and how they ended.", ("mode", "outcome"))
JOB_DURATION = Family(
    "analysis_duration_seconds",
    "Decode and analysis time, including any pool round trip.",
    ("mode",),
    LATENCY_BUCKETS,
)
PAYLOAD_NUMBERS = Family("analysis_payload_numbers", "Numbers per analysed payload.", (), COUNT_BUCKETS)
PAYLOAD_TEXT_CHARS = Family("analysis_payload_text_chars", "Text characters per analysed payload.", (), SIZE_BUCKETS)


def multiprocess_dir() -> str | None:
    """The directory shared by the worker processes, when running several."""
    return os.environ.get(MULTIPROC_DIR_ENV)


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else OTHER_METHOD


class _Histogram:
    """Per-bucket (not cumulative) counts and a sum; the last count is above every bound."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal": bisect_left finds the first bound >= value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def exposition(self) -> tuple[list[tuple[str, float]], float]:
        counts = self.counts[:]  # one snapshot, so that _count equals the +Inf bucket
        cumulative = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        return buckets, self.sum


class LoopTraffic:
    """The per-request metrics of a single-process service, as plain Python numbers.

    prometheus_client takes a lock for every increment (0.6 us a counter, 1.2 us a histogram), and
    a small request records nine values. Only the event loop's thread records here, so no lock is
    needed; a scrape from the METRICS_PORT thread reads a snapshot in which a histogram's sum may
    trail its counts by an observation. Registered on the registry as a custom collector.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self.requests: dict[tuple[str, str, int], int] = {}
        self.http: dict[tuple[str, str], tuple[_Histogram, _Histogram, _Histogram]] = {}
        self.jobs: dict[tuple[str, str], int] = {}
        self.job_duration: dict[str, _Histogram] = {}
        self.payload_numbers = _Histogram(PAYLOAD_NUMBERS.buckets)
        self.payload_text_chars = _Histogram(PAYLOAD_TEXT_CHARS.buckets)

    def request_started(self) -> None:
        self.in_flight += 1

    def request_finished(self, method: str, route: str, status: int, seconds: float, received: int, sent: int) -> None:
        self.in_flight -= 1
        method = method_label(method)
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histograms = self.http.get((method, route))
        if histograms is None:
            histograms = self.http[method, route] = (
                _Histogram(REQUEST_DURATION.buckets),
                _Histogram(REQUEST_SIZE.buckets),
                _Histogram(RESPONSE_SIZE.buckets),
            )
        duration, request_size, response_size = histograms
        duration.observe(seconds)
        request_size.observe(received)
        response_size.observe(sent)

    def job_done(self, mode: str, outcome: str, seconds: float) -> None:
        key = (mode, outcome)
        self.jobs[key] = self.jobs.get(key, 0) + 1
        duration = self.job_duration.get(mode)
        if duration is None:
            duration = self.job_duration[mode] = _Histogram(JOB_DURATION.buckets)
        duration.observe(seconds)

    def payload(self, numbers: int, text_chars: int) -> None:
        self.payload_numbers.observe(numbers)
        self.payload_text_chars.observe(text_chars)

    def collect(self) -> Iterator[Metric]:
        # In SharedTraffic's order, so that both render the same text.
        in_flight = GaugeMetricFamily(IN_FLIGHT.name, IN_FLIGHT.documentation)
        in_flight.add_metric([], self.in_flight)
        yield in_flight
        yield _counter(REQUESTS, {(m, r, str(s)): n for (m, r, s), n in list(self.requests.items())})
        http = list(self.http.items())
        for index, family in enumerate((REQUEST_DURATION, REQUEST_SIZE, RESPONSE_SIZE)):
            yield _histogram(family, {labels: histograms[index] for labels, histograms in http})
        yield _counter(JOBS, dict(list(self.jobs.items())))
        yield _histogram(JOB_DURATION, {(mode,): histogram for mode, histogram in list(self.job_duration.items())})
        yield _histogram(PAYLOAD_NUMBERS, {(): self.payload_numbers})
        yield _histogram(PAYLOAD_TEXT_CHARS, {(): self.payload_text_chars})


def _counter(family: Family, values: dict[tuple[str, ...], int]) -> CounterMetricFamily:
    metric = CounterMetricFamily(family.name, family.documentation, labels=family.labels)
    for labels, value in values.items():
        metric.add_metric(labels, value)
    return metric


def _histogram(family: Family, histograms: dict[tuple[str, ...], _Histogram]) -> HistogramMetricFamily:
    metric = HistogramMetricFamily(family.name, family.documentation, labels=family.labels)
    for labels, histogram in histograms.items():
        buckets, total = histogram.exposition()
        metric.add_metric(labels, buckets, total)
    return metric


class SharedTraffic:
    """The same metrics as LoopTraffic in prometheus_client's own types, for multiprocess mode.

    Their values live in files that every worker's scrape merges; labelled children are cached,
    as .labels() costs a lock and a dict lookup per metric.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.in_flight = Gauge(IN_FLIGHT.name, IN_FLIGHT.documentation, registry=registry, multiprocess_mode="livesum")
        self.requests = Counter(REQUESTS.name, REQUESTS.documentation, REQUESTS.labels, registry=registry)
        self.request_duration, self.request_size, self.response_size = (
            Histogram(family.name, family.documentation, family.labels, buckets=family.buckets, registry=registry)
            for family in (REQUEST_DURATION, REQUEST_SIZE, RESPONSE_SIZE)
        )
        self.jobs = Counter(JOBS.name, JOBS.documentation, JOBS.labels, registry=registry)
        self.job_duration, self.payload_numbers, self.payload_text_chars = (
            Histogram(family.name, family.documentation, family.labels, buckets=family.buckets, registry=registry)
            for family in (JOB_DURATION, PAYLOAD_NUMBERS, PAYLOAD_TEXT_CHARS)
        )
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram, Histogram, Histogram]] = {}
        self._job_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def request_started(self) -> None:
        self.in_flight.inc()

    def request_finished(self, method: str, route: str, status: int, seconds: float, received: int, sent: int) -> None:
        self.in_flight.dec()
        method = method_label(method)
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(method, route, str(status)),
                self.request_duration.labels(method, route),
                self.request_size.labels(method, route),
                self.response_size.labels(method, route),
            )
        requests, duration, request_size, response_size = children
        requests.inc()
        duration.observe(seconds)
        request_size.observe(received)
        response_size.observe(sent)

    def job_done(self, mode: str, outcome: str, seconds: float) -> None:
        children = self._job_children.get((mode, outcome))
        if children is None:
            children = self._job_children[mode, outcome] = (
                self.jobs.labels(mode, outcome),
                self.job_duration.labels(mode),
            )
        jobs, duration = children
        jobs.inc()
        duration.observe(seconds)

    def payload(self, numbers: int, text_chars: int) -> None:
        self.payload_numbers.observe(numbers)
        self.payload_text_chars.observe(text_chars)


class Metrics:
    """All of the service's metrics, on a registry of their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, revision: str = "unknown") -> None:
        self.shared_dir = multiprocess_dir()
        self.registry = registry = CollectorRegistry()
        self.traffic: LoopTraffic | SharedTraffic
        if self.shared_dir is None:
            # In multiprocess mode these are rendered per worker by WorkerProcessCollector instead.
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            self.traffic = LoopTraffic()
            registry.register(self.traffic)  # type: ignore[arg-type]
        else:
            self.traffic = SharedTraffic(registry)
        # The per-request calls, bound once: the middleware and routes call these directly.
        self.request_started = self.traffic.request_started
        self.request_finished = self.traffic.request_finished
        self.observe_payload = self.traffic.payload
        self.problems = Counter(
            "http_problems_total",
            "Problem (error) responses by status and type.",
            ["status", "type"],
            registry=registry,
        )
        self.pending_jobs = Gauge(
            "analysis_pending_jobs",
            "Off-loop jobs holding one of MAX_PENDING places: receiving their body, queued or running.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.queue_depth = Gauge(
            "analysis_pool_queue_depth",
            "Jobs handed to the pool, waiting for a free worker.",
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
        # livemin: with several workers the service is ready only when every live worker is.
        self.ready = Gauge(
            "service_ready",
            "1 when /ready would answer 200 (checked every second).",
            registry=registry,
            multiprocess_mode="livemin",
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
        if self.shared_dir is None:
            return generate_latest(self.registry)
        # Workers are children of the uvicorn supervisor.
        return render_shared(self.shared_dir, supervisor_pid=os.getppid())

    def problem(self, status: int, problem_type: str) -> None:
        self.problems.labels(str(status), problem_type).inc()

    def refused(self, status: int, problem_type: str, seconds: float, sent: int) -> None:
        """A request the HTTP protocol answered itself (malformed, headers too slow or too large).

        Its method may never have been read: it is counted as OTHER, on the unmatched route.
        """
        self.request_started()
        self.request_finished(OTHER_METHOD, UNMATCHED_ROUTE, status, seconds, 0, sent)
        self.problem(status, problem_type)

    # DispatchObserver

    def job_done(self, mode: Mode, outcome: str, seconds: float) -> None:
        self.traffic.job_done(mode, outcome, seconds)

    def pending_changed(self, pending: int) -> None:
        self.pending_jobs.set(pending)

    def handed_off_changed(self, jobs: int, workers: int) -> None:
        self.busy_workers.set(min(jobs, workers))
        self.queue_depth.set(max(jobs - workers, 0))

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
