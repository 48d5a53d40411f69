"""Process trees from /proc: what runs below a process, its state, memory and CPU time.

The service is a tree (event loop, forkserver, pool workers); the benches measure it and the
tests police it with these readings.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first); None when gone."""
    return stat_fields_of(f"/proc/{pid}/stat")


def stat_fields_of(path: str) -> list[str] | None:
    """The fields of a process's or thread's stat file after the command name; None when gone."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    # The command name may contain spaces or parentheses: split after the last ")".
    return text.rsplit(")", 1)[1].split()


def process_state(pid: int) -> str | None:
    """The one-letter state (R, S, T, Z, ...), or None when the process is gone."""
    fields = stat_fields(pid)
    return None if fields is None else fields[0]


def descendants(pid: int) -> list[int]:
    """Every live (not zombie) process below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None and fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children.get(child, []))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time of a process: utime + stime, plus cutime + cstime of its reaped children."""
    fields = stat_fields(pid)
    # Fields 14-17 of stat(5), counted after the command name.
    return 0.0 if fields is None else sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time (utime + stime) of each thread of ``pid``, by thread id; the main thread's is ``pid``."""
    seconds: dict[int, float] = {}
    try:
        thread_ids = [int(name) for name in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return seconds
    for thread_id in thread_ids:
        fields = stat_fields_of(f"/proc/{pid}/task/{thread_id}/stat")
        if fields is not None:
            seconds[thread_id] = sum(int(value) for value in fields[11:13]) / CLOCK_TICKS
    return seconds


def tree_cpu_seconds(pid: int) -> float:
    """CPU time used so far by ``pid`` and every process below it."""
    return sum(cpu_seconds(member) for member in [pid, *descendants(pid)])


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and every process below it."""
    return sum(rss_bytes(member) for member in [pid, *descendants(pid)])


class PeakRss:
    """Samples the tree's resident memory every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_bytes(self.pid))
            self._stop.wait(self.interval)
