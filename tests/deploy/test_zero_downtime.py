"""A rolling update behind the project's nginx config loses no request.

Two replicas (generation 1) serve continuous traffic through nginx. Each is replaced in turn the
way a rolling update does it: start the new replica, wait for /ready, point nginx at the new set
(`nginx -s reload`), then SIGTERM the old replica and wait for its clean exit. Every response of
the whole run must be a 200 with the correct analysis.

The clients resend a request once, on a new connection, when the server closes a reused
keep-alive connection before any response arrives. Go's net/http does the same for requests it
may replay (idempotent methods, or an Idempotency-Key header). `nginx -s reload` causes exactly
that: the old workers close their idle client connections, and a request already on its way
meets the close. Such resends are counted and bounded: at most one per client per reload.
POST /payload is a pure function, so resending it is safe. Any other error, any non-200 and any
wrong analysis fails the test.
"""

from __future__ import annotations

import json
import math
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.conftest import SEED_PAYLOAD, require_tool, wait_until
from tests.deploy.nginx_harness import Nginx

pytestmark = pytest.mark.slow

REPLICA_ENV = {"POOL_WORKERS": "1", "SHUTDOWN_DELAY_S": "1", "GRACEFUL_TIMEOUT_S": "10"}
CLIENTS = 4
# Bounds on the traffic, whatever happens: the test never loops forever.
TRAFFIC_DEADLINE_S = 45.0
REQUESTS_PER_PHASE = 40


def _text_payload(paragraphs: int) -> tuple[str, dict]:
    paragraph = "Alpha beta gamma. Delta epsilon!"
    text = "\n\n".join([paragraph] * paragraphs)
    expected = {
        "word_count": 5 * paragraphs,
        "character_count": len(text),
        "character_count_no_spaces": sum(1 for char in text if not char.isspace()),
        "sentence_count": 2 * paragraphs,
        "paragraph_count": paragraphs,
    }
    return text, expected


def _numeric_expectation(numbers: list[float]) -> dict:
    return {
        "minimum": min(numbers),
        "maximum": max(numbers),
        "mean": statistics.fmean(numbers),
        "median": statistics.median(numbers),
        "standard_deviation": statistics.stdev(numbers),
        "count": len(numbers),
    }


def _cases() -> list[tuple[bytes, dict, dict]]:
    """(body, expected numeric_analysis, expected text_analysis): small and medium payloads."""
    seed_numeric = {
        "minimum": 1,
        "maximum": 5,
        "mean": 3,
        "median": 3,
        "standard_deviation": 1.5811388300841898,
        "count": 5,
    }
    seed_text = {
        "word_count": 4,
        "character_count": 24,
        "character_count_no_spaces": 21,
        "sentence_count": 1,
        "paragraph_count": 1,
    }
    cases = [(json.dumps(SEED_PAYLOAD).encode(), seed_numeric, seed_text)]
    for count, paragraphs in ((200, 3), (20_000, 400)):
        numbers = [((index * 7919) % 1000) / 8 - 40 for index in range(count)]
        text, text_expected = _text_payload(paragraphs)
        body = json.dumps({"numbers": numbers, "text": text}).encode()
        cases.append((body, _numeric_expectation(numbers), text_expected))
    return cases


def _analysis_problem(response: httpx.Response, numeric: dict, text: dict) -> str | None:
    """Why the response is not the expected analysis, or None when it is."""
    if response.status_code != 200:
        return f"status {response.status_code}: {response.text[:300]}"
    body = response.json()
    if body["text_analysis"] != text:
        return f"text_analysis {body['text_analysis']} != {text}"
    got = body["numeric_analysis"]
    for key, value in numeric.items():
        if not math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-9):
            return f"numeric_analysis[{key}] {got[key]} != {value}"
    return None


@dataclass
class Traffic:
    """Client threads posting known payloads through nginx until told to stop."""

    url: str
    cases: list[tuple[bytes, dict, dict]]
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    succeeded: int = 0
    failures: list[str] = field(default_factory=list)
    # (monotonic time, error) of each request resent after its connection closed unanswered.
    resent: list[tuple[float, str]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        deadline = time.monotonic() + TRAFFIC_DEADLINE_S
        for number in range(CLIENTS):
            thread = threading.Thread(target=self._client, args=(number, deadline), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _client(self, number: int, deadline: float) -> None:
        # Keep-alive connections to nginx, like a real client.
        with httpx.Client(base_url=self.url, timeout=30) as client:
            sent = number
            while not self.stop.is_set() and time.monotonic() < deadline:
                body, numeric, text = self.cases[sent % len(self.cases)]
                sent += 1
                problem = self._post(client, body, numeric, text)
                with self.lock:
                    if problem is None:
                        self.succeeded += 1
                    else:
                        self.failures.append(problem)

    def _post(self, client: httpx.Client, body: bytes, numeric: dict, text: dict) -> str | None:
        for attempt in (1, 2):
            try:
                response = client.post("/payload", content=body, headers={"content-type": "application/json"})
                return _analysis_problem(response, numeric, text)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as error:
                # The connection closed under the request; httpx has dropped it from its pool.
                if attempt == 2:
                    return f"{type(error).__name__} again after a resend: {error}"
                with self.lock:
                    self.resent.append((time.monotonic(), f"{type(error).__name__}: {error}"))
            except httpx.HTTPError as error:
                return f"{type(error).__name__}: {error}"
        raise AssertionError("unreachable")

    def completed(self) -> int:
        with self.lock:
            return self.succeeded + len(self.failures)

    def run_for(self, requests: int) -> None:
        target = self.completed() + requests
        wait_until(lambda: self.completed() >= target, 30, message=f"{requests} more requests")

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=35)
        assert not any(thread.is_alive() for thread in self.threads), "a client thread hung"


def test_rolling_update_through_nginx_loses_no_request(start_service, capsys) -> None:
    nginx_binary = require_tool("nginx")
    generation_1 = [start_service(env=REPLICA_ENV) for _ in range(2)]
    upstreams = [f"127.0.0.1:{replica.port}" for replica in generation_1]
    nginx = Nginx(nginx_binary, upstreams).start()
    traffic = Traffic(nginx.url, _cases())
    generation_2 = []
    reloaded_at = []
    try:
        traffic.start()
        traffic.run_for(REQUESTS_PER_PHASE)
        for old in generation_1:
            new = start_service(env=REPLICA_ENV)  # returns once /ready is 200
            generation_2.append(new)
            upstreams = [address for address in upstreams if address != f"127.0.0.1:{old.port}"]
            upstreams.append(f"127.0.0.1:{new.port}")
            reloaded_at.append(time.monotonic())
            nginx.reload(upstreams)
            old.signal(signal.SIGTERM)
            assert old.wait(timeout=30) == 0, old.log()
            traffic.run_for(REQUESTS_PER_PHASE)
    finally:
        traffic.finish()
        entries, errors = nginx.stop()

    assert traffic.failures == [], f"{len(traffic.failures)} failed of {traffic.completed()}: {traffic.failures[:5]}"
    # Each reload closes each client's connection to an old worker at most once.
    assert len(traffic.resent) <= CLIENTS * len(reloaded_at), traffic.resent
    payload_entries = [entry for entry in entries if entry["uri"] == "/payload"]
    assert len(payload_entries) == traffic.succeeded
    # The replica that answered is the last address nginx tried.
    answered_by = [entry["upstream_addr"].split(", ")[-1] for entry in payload_entries]
    served = {
        generation: sum(answered_by.count(f"127.0.0.1:{replica.port}") for replica in replicas)
        for generation, replicas in (("generation 1", generation_1), ("generation 2", generation_2))
    }
    retried = sum(1 for entry in payload_entries if ", " in entry["upstream_addr"])
    assert served["generation 1"] > 0 and served["generation 2"] > 0, served
    assert served["generation 1"] + served["generation 2"] == traffic.succeeded, served
    with capsys.disabled():
        print(
            f"\nrolling update: {traffic.succeeded} requests, 0 failed; served {served}; "
            f"{retried} retried by nginx on another replica; {len(traffic.resent)} resent by a client"
        )
        for moment, error in traffic.resent:
            since_reload = min(moment - reload for reload in reloaded_at if reload <= moment)
            print(f"  resent {since_reload:.3f} s after an nginx reload: {error}")
        if retried:
            print("nginx error log:\n" + errors)
