"""Shared fixtures: real service processes on loopback, tools the tests drive."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.proctree import descendants, stat_fields

ROOT = Path(__file__).resolve().parent.parent
SEED_PAYLOAD = {"numbers": [1, 2, 3, 4, 5], "text": "Sample text for analysis"}
# The seed's example answer, corrected (character_count 24), without processing_time_ms.
SEED_ANALYSIS = {
    "numeric_analysis": {
        "minimum": 1.0,
        "maximum": 5.0,
        "mean": 3.0,
        "median": 3.0,
        "standard_deviation": 1.5811388300841898,
        "count": 5,
    },
    "text_analysis": {
        "word_count": 4,
        "character_count": 24,
        "character_count_no_spaces": 21,
        "sentence_count": 1,
        "paragraph_count": 1,
    },
}


def require_tool(name: str) -> str:
    """The path of an external tool; a missing tool fails under CI and skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/run-tests.sh installs it as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.02, message: str = "condition") -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``; 0 when none."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == wanted for key, wanted in labels.items())
    )


def scrape_metric(url: str, name: str, **labels: str) -> float:
    """``metric_value`` of the service's /metrics right now."""
    return metric_value(httpx.get(f"{url}/metrics", timeout=10).text, name, **labels)


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-headers: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body


@dataclass
class ServiceProcess:
    """``python -m service`` started on a free loopback port, in its own process group."""

    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    prefix: tuple[str, ...] = ()  # e.g. ("taskset", "-c", "0")
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, log_dir: Path, ready_timeout: float = 30.0) -> ServiceProcess:
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), **self.env}
        self.log_path = log_dir / f"service-{self.port}.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "service", *self.args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._ready_or_dead, ready_timeout, interval=0.05, message=f"{self.url}/ready")
        if self.process.poll() is not None:
            raise AssertionError(f"service exited with {self.process.returncode}:\n{self.log()}")
        return self

    def _ready_or_dead(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            return True
        try:
            return httpx.get(f"{self.url}/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def descendants(self) -> list[int]:
        """PIDs of every live process below the service (pool workers, forkserver)."""
        return descendants(self.pid)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in a process group."""
    members = []
    for entry in os.scandir("/proc"):
        fields = stat_fields(int(entry.name)) if entry.name.isdigit() else None
        # Field 5 of stat(5), the process group, is the fourth after the command name.
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator:
    """Start real service processes: ``start_service(env={...})``; all are stopped afterwards."""
    started: list[ServiceProcess] = []

    def start(
        env: Mapping[str, str] | None = None, args: tuple[str, ...] = (), prefix: tuple[str, ...] = (), **kwargs
    ) -> ServiceProcess:
        service = ServiceProcess(env=dict(env or {}), args=args, prefix=prefix)
        started.append(service)
        return service.start(tmp_path, **kwargs)

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One service with default settings for a module of read-only tests."""
    service = ServiceProcess(env={"POOL_WORKERS": "2"}).start(tmp_path_factory.mktemp("service"))
    yield service
    service.stop()
