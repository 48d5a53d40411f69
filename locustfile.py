"""Locust load test for the payload analysis service.

Traffic: a weighted mix of small, medium and large ``POST /payload`` bodies plus occasional
``GET /ready`` and ``GET /metrics`` scrapes. Bodies are generated once per size (seeded) and
pre-encoded, with their expected analysis computed locally, so the generator spends its CPU on
requests. Every response's JSON shape is checked; a sampled fraction is compared field by field
with the local computation.

Load shapes (``--shape step|spike|soak``) and SLO gates (``--slo-p95-ms``,
``--slo-max-failure-ratio``) are custom arguments; see docs/load-testing.md.

    locust -f locustfile.py --headless -H http://127.0.0.1:8000 -u 20 -r 5 -t 60s
    locust -f locustfile.py --headless -H http://127.0.0.1:8000 --shape step --steps 6
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from locust import FastHttpUser, LoadTestShape, events, task
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import calculate_response_time_percentile, diff_response_time_dicts

logger = logging.getLogger("locustfile")

PAYLOAD_ROUTE = "/payload"
SHED_LABEL = "shed: 503 overloaded"

DEFAULT_SIZES = "small=10:160,medium=10000:10240,large=100000:102400"
DEFAULT_WEIGHTS = "small=80,medium=18,large=2"
# An edge that keeps /metrics internal (deploy/nginx, the Ingress) answers it 404: /ready alone there.
DEFAULT_PROBE_PATHS = "/ready,/metrics"

NUMERIC_FIELDS = ("minimum", "maximum", "mean", "median", "standard_deviation", "count")
TEXT_FIELDS = (
    "word_count",
    "character_count",
    "character_count_no_spaces",
    "sentence_count",
    "paragraph_count",
)

# Words for generated text; a few non-ASCII ones so character counts are code points, not bytes.
VOCABULARY = (
    "latency throughput replica pod node cluster request response queue worker pool budget "
    "error signal metric alert graph window quota limit burst spike steady drain probe ready "
    "health scale shard cache disk memory core thread process service client server route "
    "café naïve résumé über façade smörgåsbord jalapeño"
).split()


# --------------------------------------------------------------------------------------------
# Payloads and the local reference computation (pure; tests/load imports these).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PayloadSize:
    name: str
    numbers: int
    text_chars: int


@dataclass(frozen=True)
class Payload:
    size: str
    body: bytes
    expected: dict[str, dict[str, float]] = field(repr=False)


def parse_sizes(spec: str) -> list[PayloadSize]:
    """``"small=10:160,large=100000:102400"`` -> sizes (name=numbers:text characters)."""
    sizes = []
    for item in _items(spec):
        name, _, dims = item.partition("=")
        numbers, _, chars = dims.partition(":")
        try:
            size = PayloadSize(name.strip(), int(numbers), int(chars))
        except ValueError:
            raise ValueError(f"payload size {item!r} is not name=numbers:chars") from None
        if not size.name or size.numbers < 1 or size.text_chars < 1:
            raise ValueError(f"payload size {item!r} needs a name and positive counts")
        sizes.append(size)
    if not sizes:
        raise ValueError("no payload sizes given")
    return sizes


def parse_weights(spec: str, sizes: list[PayloadSize]) -> dict[str, float]:
    """``"small=80,large=2"`` -> weights; sizes left out get weight 0."""
    names = {size.name for size in sizes}
    weights = dict.fromkeys(names, 0.0)
    for item in _items(spec):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in names:
            raise ValueError(f"weight for unknown payload size {name!r} (sizes: {sorted(names)})")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"payload weight {item!r} is not name=number") from None
        if weights[name] < 0:
            raise ValueError(f"payload weight {item!r} is negative")
    if sum(weights.values()) <= 0:
        raise ValueError("payload weights add up to zero")
    return weights


def parse_probe_paths(spec: str) -> list[str]:
    """``"/ready,/metrics"`` -> the paths probe tasks GET."""
    paths = _items(spec)
    if not paths or not all(path.startswith("/") for path in paths):
        raise ValueError(f"probe paths {spec!r} are not /path,...")
    return paths


def _items(spec: str) -> list[str]:
    return [item.strip() for item in spec.split(",") if item.strip()]


def generate_text(rng: random.Random, target_chars: int) -> tuple[str, int, int]:
    """Text of about ``target_chars`` characters; returns (text, sentences, paragraphs).

    Whole sentences of vocabulary words end in . ! or ?, paragraphs are separated by a blank
    line, so the sentence and paragraph counts are known by construction.
    """
    paragraphs: list[str] = []
    length = sentences = 0
    while length < target_chars:
        paragraph = []
        for _ in range(rng.randint(2, 5)):
            words = rng.choices(VOCABULARY, k=rng.randint(4, 14))
            paragraph.append(" ".join(words).capitalize() + rng.choice(".!?"))
            sentences += 1
            length += len(paragraph[-1]) + 1
            if length >= target_chars:
                break
        paragraphs.append(" ".join(paragraph))
    return "\n\n".join(paragraphs), sentences, len(paragraphs)


def generate_numbers(rng: random.Random, count: int) -> list[float]:
    # Three decimals keep the JSON short; repr round-trips, so the service sees these exact floats.
    return [round(rng.uniform(-10_000.0, 10_000.0), 3) for _ in range(count)]


def expected_analysis(
    numbers: list[float],
    text: str,
    sentences: int | None = None,
    paragraphs: int | None = None,
) -> dict[str, dict[str, float]]:
    """The analysis computed locally with ``statistics`` and ``str``.

    Sentence and paragraph counts follow rules only the service implements in full, so they are
    compared only when the caller knows them (generated text knows them by construction).
    """
    words = text.split()
    text_expected: dict[str, float] = {
        "word_count": len(words),
        "character_count": len(text),
        "character_count_no_spaces": sum(map(len, words)),
    }
    if sentences is not None:
        text_expected["sentence_count"] = sentences
    if paragraphs is not None:
        text_expected["paragraph_count"] = paragraphs
    return {
        "numeric_analysis": {
            "minimum": min(numbers),
            "maximum": max(numbers),
            "count": len(numbers),
            "mean": statistics.mean(numbers),
            "median": statistics.median(numbers),
            "standard_deviation": statistics.stdev(numbers) if len(numbers) > 1 else 0.0,
        },
        "text_analysis": text_expected,
    }


def shape_problems(doc: Any) -> list[str]:
    """What is wrong with the JSON shape of a 200 response (empty when it is right)."""
    if not isinstance(doc, dict):
        return [f"response is {type(doc).__name__}, not an object"]
    problems = []
    expected_keys = {"numeric_analysis", "text_analysis", "processing_time_ms"}
    if set(doc) != expected_keys:
        problems.append(f"keys {sorted(doc)} != {sorted(expected_keys)}")
    for section, fields, kinds in (
        ("numeric_analysis", NUMERIC_FIELDS, (int, float)),
        ("text_analysis", TEXT_FIELDS, (int,)),
    ):
        part = doc.get(section)
        if not isinstance(part, dict) or set(part) != set(fields):
            problems.append(f"{section} is not an object with {', '.join(fields)}")
            continue
        for name in fields:
            value = part[name]
            if isinstance(value, bool) or not isinstance(value, kinds):
                problems.append(f"{section}.{name} is {value!r}")
    count = (doc.get("numeric_analysis") or {}).get("count")
    if isinstance(count, float):
        problems.append("numeric_analysis.count is not an integer")
    for name in TEXT_FIELDS:
        value = (doc.get("text_analysis") or {}).get(name)
        if isinstance(value, int) and value < 0:
            problems.append(f"text_analysis.{name} is negative")
    elapsed = doc.get("processing_time_ms")
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not elapsed >= 0:
        problems.append(f"processing_time_ms is {elapsed!r}")
    return problems


def analysis_problems(expected: dict[str, dict[str, float]], doc: dict[str, Any]) -> list[str]:
    """Fields of a (well-shaped) response that disagree with the local computation.

    Exact: minimum, maximum, count and the text counts. mean, median and standard_deviation
    within a relative 1e-9 of ``statistics`` (the service promises far better).
    """
    problems = []
    for section, fields in expected.items():
        for name, want in fields.items():
            got = doc[section][name]
            if name in ("mean", "median", "standard_deviation"):
                agrees = math.isclose(got, want, rel_tol=1e-9)
            else:
                agrees = got == want
            if not agrees:
                problems.append(f"{section}.{name}: got {got!r}, expected {want!r}")
    return problems


def build_payloads(sizes: list[PayloadSize], variants: int, seed: int) -> dict[str, list[Payload]]:
    """``variants`` distinct pre-encoded bodies per size, each with its expected analysis."""
    corpus: dict[str, list[Payload]] = {}
    for size in sizes:
        rng = random.Random(f"{seed}:{size.name}")
        corpus[size.name] = []
        for _ in range(variants):
            numbers = generate_numbers(rng, size.numbers)
            text, sentences, paragraphs = generate_text(rng, size.text_chars)
            body = json.dumps({"numbers": numbers, "text": text}, ensure_ascii=False, separators=(",", ":")).encode()
            expected = expected_analysis(numbers, text, sentences, paragraphs)
            corpus[size.name].append(Payload(size.name, body, expected))
    return corpus


# --------------------------------------------------------------------------------------------
# Custom arguments (every one has an environment variable fallback).
# --------------------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    def env(name: str, default: str) -> str:
        return os.environ.get(name, default)

    group = parser.add_argument_group("sre-microservice load test")
    group.add_argument(
        "--payload-sizes",
        default=env("LOCUST_PAYLOAD_SIZES", DEFAULT_SIZES),
        help="name=numbers:text_chars,... (env LOCUST_PAYLOAD_SIZES)",
    )
    group.add_argument(
        "--payload-weights",
        default=env("LOCUST_PAYLOAD_WEIGHTS", DEFAULT_WEIGHTS),
        help="name=weight,... relative request mix (env LOCUST_PAYLOAD_WEIGHTS)",
    )
    group.add_argument(
        "--payload-variants",
        type=int,
        default=int(env("LOCUST_PAYLOAD_VARIANTS", "3")),
        help="distinct pre-generated bodies per size (env LOCUST_PAYLOAD_VARIANTS)",
    )
    group.add_argument(
        "--payload-seed",
        type=int,
        default=int(env("LOCUST_PAYLOAD_SEED", "20240601")),
        help="seed for the generated bodies (env LOCUST_PAYLOAD_SEED)",
    )
    group.add_argument(
        "--verify-fraction",
        type=float,
        default=float(env("LOCUST_VERIFY_FRACTION", "0.05")),
        help="share of 200 responses compared with the local computation (env LOCUST_VERIFY_FRACTION)",
    )
    group.add_argument(
        "--probe-fraction",
        type=float,
        default=float(env("LOCUST_PROBE_FRACTION", "0.02")),
        help="share of tasks that GET one of --probe-paths instead (env LOCUST_PROBE_FRACTION)",
    )
    group.add_argument(
        "--probe-paths",
        default=env("LOCUST_PROBE_PATHS", DEFAULT_PROBE_PATHS),
        help="paths,... the probe tasks GET; through an edge that hides /metrics, /ready alone "
        "(env LOCUST_PROBE_PATHS)",
    )
    group.add_argument(
        "--user-rps",
        type=float,
        default=float(env("LOCUST_USER_RPS", "2")),
        help="tasks per second per user, 0 = back to back (env LOCUST_USER_RPS)",
    )
    group.add_argument(
        "--shape",
        choices=["", *SHAPES],
        default=env("LOCUST_SHAPE", ""),
        help="load shape; empty = plain -u/-r/-t (env LOCUST_SHAPE)",
    )
    group.add_argument(
        "--step-users",
        type=int,
        default=int(env("LOCUST_STEP_USERS", "10")),
        help="users added per step (env LOCUST_STEP_USERS)",
    )
    group.add_argument(
        "--steps", type=int, default=int(env("LOCUST_STEPS", "6")), help="number of steps (env LOCUST_STEPS)"
    )
    group.add_argument(
        "--step-seconds",
        type=float,
        default=float(env("LOCUST_STEP_SECONDS", "30")),
        help="duration of each step (env LOCUST_STEP_SECONDS)",
    )
    group.add_argument(
        "--step-warmup-seconds",
        type=float,
        default=float(env("LOCUST_STEP_WARMUP_SECONDS", "-1")),
        help="start of each step left out of its measurement; -1 = a quarter "
        "of the step, at most 5 s (env LOCUST_STEP_WARMUP_SECONDS)",
    )
    group.add_argument(
        "--step-report",
        default=env("LOCUST_STEP_REPORT", ""),
        help="write per-step measurements here as JSON lines (env LOCUST_STEP_REPORT)",
    )
    group.add_argument(
        "--spike-base-users",
        type=int,
        default=int(env("LOCUST_SPIKE_BASE_USERS", "10")),
        help="users before and after the spike (env LOCUST_SPIKE_BASE_USERS)",
    )
    group.add_argument(
        "--spike-peak-users",
        type=int,
        default=int(env("LOCUST_SPIKE_PEAK_USERS", "100")),
        help="users during the spike (env LOCUST_SPIKE_PEAK_USERS)",
    )
    group.add_argument(
        "--spike-start-seconds",
        type=float,
        default=float(env("LOCUST_SPIKE_START_SECONDS", "30")),
        help="when the spike starts (env LOCUST_SPIKE_START_SECONDS)",
    )
    group.add_argument(
        "--spike-seconds",
        type=float,
        default=float(env("LOCUST_SPIKE_SECONDS", "30")),
        help="how long the spike lasts (env LOCUST_SPIKE_SECONDS)",
    )
    group.add_argument(
        "--spike-total-seconds",
        type=float,
        default=float(env("LOCUST_SPIKE_TOTAL_SECONDS", "120")),
        help="length of the whole run (env LOCUST_SPIKE_TOTAL_SECONDS)",
    )
    group.add_argument(
        "--soak-users",
        type=int,
        default=int(env("LOCUST_SOAK_USERS", "20")),
        help="steady user count (env LOCUST_SOAK_USERS)",
    )
    group.add_argument(
        "--soak-ramp-seconds",
        type=float,
        default=float(env("LOCUST_SOAK_RAMP_SECONDS", "60")),
        help="ramp up time (env LOCUST_SOAK_RAMP_SECONDS)",
    )
    group.add_argument(
        "--soak-seconds",
        type=float,
        default=float(env("LOCUST_SOAK_SECONDS", "1800")),
        help="length of the whole run (env LOCUST_SOAK_SECONDS)",
    )
    group.add_argument(
        "--slo-p95-ms",
        type=float,
        default=float(env("LOCUST_SLO_P95_MS", "250")),
        help="exit 1 when the run's p95 latency exceeds this; 0 = off (env LOCUST_SLO_P95_MS)",
    )
    group.add_argument(
        "--slo-max-failure-ratio",
        type=float,
        default=float(env("LOCUST_SLO_MAX_FAILURE_RATIO", "0.01")),
        help="exit 1 when failures/requests exceeds this; negative = off (env LOCUST_SLO_MAX_FAILURE_RATIO)",
    )


# --------------------------------------------------------------------------------------------
# Users.
# --------------------------------------------------------------------------------------------

_corpus: dict[str, list[Payload]] = {}
_mix: tuple[list[str], list[float]] = ([], [])
_probe_paths: list[str] = []


@events.test_start.add_listener
def prepare_payloads(environment, **_kwargs) -> None:
    # Runs where the users run (workers receive the master's custom arguments before this).
    if isinstance(environment.runner, MasterRunner):
        return
    options = environment.parsed_options
    sizes = parse_sizes(options.payload_sizes)
    weights = parse_weights(options.payload_weights, sizes)
    started = time.perf_counter()
    _corpus.clear()
    _corpus.update(build_payloads(sizes, max(1, options.payload_variants), options.payload_seed))
    names = [name for name, weight in weights.items() if weight > 0]
    _mix[0][:] = names
    _mix[1][:] = [weights[name] for name in names]
    _probe_paths[:] = parse_probe_paths(options.probe_paths)
    logger.info(
        "payloads ready in %.2fs: %s, weights %s",
        time.perf_counter() - started,
        ", ".join(f"{s.name}={s.numbers} numbers + {s.text_chars} chars" for s in sizes),
        weights,
    )


class PayloadUser(FastHttpUser):
    """A client posting payloads from the weighted mix and, rarely, scraping the probes."""

    def wait_time(self) -> float:
        rate = self.environment.parsed_options.user_rps
        if rate <= 0:
            return 0.0
        # constant_throughput: sleep the rest of this user's 1/rate slot. The first slot starts
        # at a random phase, so users spawned together do not fire in lockstep.
        now = time.perf_counter()
        previous = getattr(self, "_next_slot", now - random.random() / rate)
        self._next_slot = max(previous + 1.0 / rate, now)
        return self._next_slot - now

    @task
    def one_request(self) -> None:
        options = self.environment.parsed_options
        if random.random() < options.probe_fraction:
            self.probe(random.choice(_probe_paths))
            return
        size = random.choices(_mix[0], weights=_mix[1])[0]
        payload = random.choice(_corpus[size])
        self.post_payload(payload, random.random() < options.verify_fraction)

    def post_payload(self, payload: Payload, verify: bool) -> None:
        with self.client.post(
            PAYLOAD_ROUTE,
            data=payload.body,
            headers={"Content-Type": "application/json"},
            name=f"{PAYLOAD_ROUTE} [{payload.size}]",
            catch_response=True,
        ) as response:
            if not _status_ok(response):
                return
            try:
                doc = json.loads(response.content)
            except ValueError as error:
                response.failure(f"response is not JSON: {error}")
                return
            problems = shape_problems(doc)
            if not problems and verify:
                problems = analysis_problems(payload.expected, doc)
            if problems:
                response.failure("; ".join(problems))
            else:
                response.success()

    def probe(self, path: str) -> None:
        with self.client.get(path, catch_response=True) as response:
            if not _status_ok(response):
                return
            if path == "/metrics" and b"http_requests_total" not in response.content:
                response.failure("/metrics has no http_requests_total")
            else:
                response.success()


def _status_ok(response) -> bool:
    """Mark non-200 responses failed, a shed request (503 + Retry-After) with its own label."""
    if response.status_code == 200:
        return True
    if response.status_code == 503 and response.headers.get("Retry-After"):
        response.failure(SHED_LABEL)
    elif response.status_code == 0:
        response.failure(f"connection error: {response.error}")
    else:
        response.failure(f"HTTP {response.status_code}")
    return False


# --------------------------------------------------------------------------------------------
# Load shapes. They are abstract so Locust does not auto-select one: with more than one
# LoadTestShape subclass in a locustfile, Locust 2.x silently uses the first
# (main.merge_locustfiles_content), and any shape disables -u/-r/-t. The init listener installs
# the one --shape names.
# --------------------------------------------------------------------------------------------


class StepShape(LoadTestShape):
    """``steps`` plateaus of ``step_users`` more users each, ``step_seconds`` long.

    With ``--step-report`` it writes one JSON line per step, measured after the step's warm-up:
    payload throughput, payload latency percentiles (from the difference of Locust's response
    time histograms, so they cover exactly that window), failures, and the wall-clock window.
    """

    abstract = True

    def __init__(self, step_users: int, steps: int, step_seconds: float, warmup: float, report: str):
        super().__init__()
        self.step_users, self.steps, self.step_seconds = step_users, steps, step_seconds
        self.warmup = min(5.0, step_seconds / 4) if warmup < 0 else warmup
        self.report = report
        self._marks: dict[int, dict[str, Any]] = {}

    def tick(self):
        run_time = self.get_run_time()
        step = int(run_time // self.step_seconds)
        if self.report:
            self._measure(step, run_time)
        if step >= self.steps:
            return None
        users = (step + 1) * self.step_users
        return users, max(float(self.step_users), 1.0)

    def _measure(self, step: int, run_time: float) -> None:
        in_step = run_time - step * self.step_seconds
        if step < self.steps and in_step >= self.warmup and step not in self._marks:
            self._marks[step] = _snapshot(self.runner.stats)
        previous = step - 1
        if previous in self._marks and "reported" not in self._marks[previous]:
            start = self._marks[previous]
            _append_json_line(
                self.report,
                _window_stats(start, _snapshot(self.runner.stats))
                | {"step": previous + 1, "users": (previous + 1) * self.step_users},
            )
            start["reported"] = True


class SpikeShape(LoadTestShape):
    """Base load, a sudden jump to the peak for ``spike_seconds``, back to base, then stop."""

    abstract = True

    def __init__(self, base: int, peak: int, start: float, duration: float, total: float):
        super().__init__()
        self.base, self.peak, self.start, self.duration, self.total = base, peak, start, duration, total

    def tick(self):
        run_time = self.get_run_time()
        if run_time >= self.total:
            return None
        if self.start <= run_time < self.start + self.duration:
            return self.peak, float(self.peak)  # all spike users within a second
        return self.base, float(max(self.base, self.peak))


class SoakShape(LoadTestShape):
    """Ramp to ``users`` over ``ramp_seconds``, hold until ``total`` seconds, stop."""

    abstract = True

    def __init__(self, users: int, ramp_seconds: float, total: float):
        super().__init__()
        self.users, self.ramp_seconds, self.total = users, ramp_seconds, total

    def tick(self):
        if self.get_run_time() >= self.total:
            return None
        return self.users, max(self.users / max(self.ramp_seconds, 1.0), 0.1)


SHAPES = ("step", "spike", "soak")


def make_shape(options) -> LoadTestShape | None:
    if options.shape == "step":
        return StepShape(
            options.step_users,
            options.steps,
            options.step_seconds,
            options.step_warmup_seconds,
            options.step_report,
        )
    if options.shape == "spike":
        return SpikeShape(
            options.spike_base_users,
            options.spike_peak_users,
            options.spike_start_seconds,
            options.spike_seconds,
            options.spike_total_seconds,
        )
    if options.shape == "soak":
        return SoakShape(options.soak_users, options.soak_ramp_seconds, options.soak_seconds)
    return None


@events.init.add_listener
def install_shape(environment, runner, **_kwargs) -> None:
    options = environment.parsed_options
    if options is None or isinstance(runner, WorkerRunner):
        return  # a shape runs on the master (or the only process) alone
    shape = make_shape(options)
    if shape is not None:
        shape.runner = runner
        environment.shape_class = shape
        logger.info("load shape: %s", type(shape).__name__)


def _snapshot(stats) -> dict[str, Any]:
    payload_entries = [e for (name, _), e in stats.entries.items() if name.startswith(PAYLOAD_ROUTE)]
    response_times: dict[int, int] = {}
    for entry in payload_entries:
        for bucket, count in entry.response_times.items():
            response_times[bucket] = response_times.get(bucket, 0) + count
    return {
        "time": time.time(),
        "requests": sum(e.num_requests for e in payload_entries),
        "payload_failures": sum(e.num_failures for e in payload_entries),
        "failures": stats.total.num_failures,
        "response_times": response_times,
    }


def _window_stats(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    seconds = end["time"] - start["time"]
    requests = end["requests"] - start["requests"]
    histogram = diff_response_time_dicts(end["response_times"], start["response_times"])
    # Failed requests are counted in num_requests and in the histogram alike.
    return {
        "start": start["time"],
        "end": end["time"],
        "seconds": seconds,
        "requests": requests,
        "rps": requests / seconds if seconds > 0 else 0.0,
        "failures": end["failures"] - start["failures"],
        "payload_failures": end["payload_failures"] - start["payload_failures"],
        **{
            f"p{round(q * 100)}_ms": calculate_response_time_percentile(histogram, requests, q) if requests else None
            for q in (0.5, 0.95, 0.99)
        },
    }


def _append_json_line(path: str, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------------------------
# SLO gates.
# --------------------------------------------------------------------------------------------


def slo_breaches(stats_total, max_failure_ratio: float, p95_ms: float) -> list[str]:
    """Why the run breaks its SLOs (empty when it keeps them). Negative / zero limits are off."""
    breaches = []
    requests = stats_total.num_requests
    if requests == 0:
        return ["no requests were made"]
    ratio = stats_total.num_failures / requests
    if max_failure_ratio >= 0 and ratio > max_failure_ratio:
        breaches.append(f"failure ratio {ratio:.4f} > {max_failure_ratio}")
    p95 = stats_total.get_response_time_percentile(0.95)
    if p95_ms > 0 and p95 > p95_ms:
        breaches.append(f"p95 {p95:.1f} ms > {p95_ms} ms")
    return breaches


@events.quitting.add_listener
def enforce_slos(environment, **_kwargs) -> None:
    options = environment.parsed_options
    if options is None or isinstance(environment.runner, WorkerRunner):
        return
    breaches = slo_breaches(environment.runner.stats.total, options.slo_max_failure_ratio, options.slo_p95_ms)
    if breaches:
        logger.error("SLO breached: %s", "; ".join(breaches))
        environment.process_exit_code = 1
    else:
        # The gates decide: failures under the allowed ratio do not fail the run.
        logger.info(
            "SLOs kept (p95 <= %s ms, failure ratio <= %s)",
            options.slo_p95_ms,
            options.slo_max_failure_ratio,
        )
        environment.process_exit_code = 0
