"""Helpers for the reliability suite: metrics, process trees, memory, hostile clients."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import httpx

from bench.proctree import process_state

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
