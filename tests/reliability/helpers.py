"""Helpers for the reliability suite: pool workers, open files, payloads, problem checks."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import httpx

from bench.proctree import process_state

JSON = {"content-type": "application/json"}


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
