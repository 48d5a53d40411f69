"""Helpers for the reliability suite: metrics, process trees, memory, hostile clients."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import httpx

JSON = {"content-type": "application/json"}
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def metrics(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, keyed by name and label set."""
    samples = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
            samples[match["name"], labels] = float(match["value"])
    return samples


def metric(url: str, name: str, **labels: str) -> float:
    """One series' value; the sum over series when ``labels`` leaves some unspecified; 0 when absent."""
    wanted = set(labels.items())
    return sum(value for (sample, found), value in metrics(url).items() if sample == name and wanted <= found)


def pool_workers(service_pid: int) -> set[int]:
    """The live pool workers: children of the service's multiprocessing forkserver."""
    workers = set()
    for child in _children(service_pid):
        if b"multiprocessing.forkserver" in _cmdline(child):
            workers.update(_children(child))
    return workers


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split() if process_state(int(child)) not in (None, "Z")]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def process_state(pid: int) -> str | None:
    """The one-letter state (R, S, T, Z, ...) or None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process, in clock ticks (0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(service) -> int:
    """Resident memory of the service and every process below it."""
    return sum(rss_kib(pid) for pid in [service.pid, *service.descendants()])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def numbers_body(count: int, text: str = "Load test text. Two sentences.", seed: int = 7) -> bytes:
    """A valid payload of ``count`` numbers (about 19 bytes each)."""
    generator = random.Random(seed)
    return json.dumps({"numbers": [generator.uniform(-1e6, 1e6) for _ in range(count)], "text": text}).encode()


def assert_problem(response: httpx.Response, status: int | tuple[int, ...]) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == response.status_code
    return problem
