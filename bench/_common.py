"""What every benchmark shares: the machine, payloads, pinned servers, wrk, and the outputs.

Measurement rules (docs/performance.md): the server and the load generator run on different
cores (``taskset``), every run is preceded by a warm-up, A/B variants are alternated within one
run, and medians of the repeats are quoted.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from bench.proctree import tree_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent

# Payload sizes of the pool comparison: (numbers, text bytes).
SIZES: tuple[tuple[int, int], ...] = (
    (5, 100),
    (100, 1_000),
    (1_000, 10_000),
    (10_000, 100_000),
    (100_000, 1_000_000),
    (1_000_000, 5_000_000),
)

_WORDS = (
    "latency throughput service replica pod request queue worker metric alert budget error "
    "signal trace span histogram quantile rollout probe drain window saturation capacity"
).split()


def size_label(numbers: int, text_bytes: int) -> str:
    return f"{_short(numbers)}/{_short(text_bytes)}B"


def _short(value: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if value >= scale:
            return f"{value / scale:g}{unit}"
    return str(value)


def make_text(size: int, seed: int = 7) -> str:
    """Prose-like ASCII text of exactly ``size`` characters: words, sentences and paragraphs."""
    rng = random.Random(seed)
    parts: list[str] = []
    length = 0
    while length < size:
        sentence = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14))).capitalize()
        sentence += rng.choice(".!?") + ("\n\n" if rng.random() < 0.15 else " ")
        parts.append(sentence)
        length += len(sentence)
    return "".join(parts)[:size]


def make_numbers(count: int, seed: int = 11) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(-1e4, 1e4), 6) for _ in range(count)]


def make_body(numbers: int, text_bytes: int, seed: int = 11) -> bytes:
    return json.dumps({"numbers": make_numbers(numbers, seed), "text": make_text(text_bytes, seed)}).encode()


# ---------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, object]:
    import msgspec
    import numpy
    import starlette
    import uvicorn

    model = cpu_model()
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else ""
    return {
        "cpu_model": model,
        "cpus_online": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "msgspec": msgspec.__version__,
        "pysimdjson": importlib.metadata.version("pysimdjson"),
        "starlette": starlette.__version__,
        "uvicorn": uvicorn.__version__,
        "wrk": wrk_version,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def print_header(title: str, settings: Mapping[str, object]) -> dict[str, object]:
    machine = machine_info()
    print(f"# {title}")
    print("machine: " + ", ".join(f"{key}={value}" for key, value in machine.items()))
    print("settings: " + ", ".join(f"{key}={value}" for key, value in settings.items()))
    warn_if_busy()
    return machine


def warn_if_busy() -> float:
    """Other work on the machine skews every figure; say so instead of silently reporting it."""
    load = os.getloadavg()[0]
    cpus = len(os.sched_getaffinity(0))
    if load > cpus:
        print(
            f"WARNING: load average {load:.1f} exceeds the {cpus} CPUs: other processes compete with the "
            "benchmark, so absolute figures (and parallel speed-ups) are unreliable; ratios of alternated "
            "runs are the least affected."
        )
    return load


def taskset(cpus: str | None, command: Sequence[str]) -> list[str]:
    """``command`` pinned to ``cpus`` (e.g. "0" or "0,1"); unpinned when None or taskset is absent."""
    if not cpus or shutil.which("taskset") is None:
        return list(command)
    return ["taskset", "-c", cpus, *command]


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        sys.exit("bench: wrk is not installed (Debian package 'wrk'; see scripts/system-packages.txt)")
    return path


# ---------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A server process in its own session, pinned with taskset, ready when ``ready_path`` is 200."""

    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cpus: str | None = "0"
    ready_path: str = "/ready"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> Server:
        """Start the process without waiting: several servers can then warm up side by side."""
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        handle, name = tempfile.mkstemp(prefix="bench-server-", suffix=".log")
        self.log = Path(name)
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        self.process = subprocess.Popen(
            taskset(self.cpus, command),
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        os.close(handle)
        return self

    def wait_ready(self, timeout: float = 60.0) -> Server:
        assert self.process is not None and self.log is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready after {timeout} s:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        if self.log is not None:
            self.log.unlink(missing_ok=True)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


def service_command() -> list[str]:
    return [sys.executable, "-m", "service"]


@contextmanager
def running(server: Server) -> Iterator[Server]:
    with all_running([server]):
        yield server


@contextmanager
def all_running(servers: Sequence[Server]) -> Iterator[Sequence[Server]]:
    """Start every server side by side, wait until all are ready; stop them all afterwards."""
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


# ------------------------------------------------------------------------------------------- wrk

# wrk reads the body from a file and reports its own percentiles as one JSON line at the end.
_WRK_SCRIPT = """
local body_path = os.getenv("BENCH_BODY")
local method = os.getenv("BENCH_METHOD") or "GET"
wrk.method = method
if body_path and body_path ~= "" then
  local file = assert(io.open(body_path, "rb"))
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/json"
end
done = function(summary, latency, requests)
  local statuses = summary.errors.status
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
    '"timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %f}\\n',
    summary.requests, summary.duration, statuses,
    summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    # CPU seconds the server's process tree used during the run: throughput on a shared machine
    # depends on the CPU share the server got, CPU per request does not.
    server_cpu_s: float = 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_s * 1000 / self.requests if self.requests else 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok_rps(self) -> float:
        return (self.requests - self.non_2xx) / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "rps": self.rps, "ok_rps": self.ok_rps, "cpu_ms_per_request": self.cpu_ms_per_request}


class Wrk:
    """Runs wrk against one URL with a request body from a file, pinned to the client cores."""

    def __init__(self, cpus: str | None = "1") -> None:
        self.binary = require_wrk()
        self.cpus = cpus
        self._dir = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
        self._script = self._dir / "post.lua"
        self._script.write_text(_WRK_SCRIPT)
        self._bodies: dict[bytes, Path] = {}

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Wrk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _body_file(self, body: bytes) -> Path:
        path = self._bodies.get(body)
        if path is None:
            path = self._dir / f"body-{len(self._bodies)}.json"
            path.write_bytes(body)
            self._bodies[body] = path
        return path

    def start(
        self, url: str, *, body: bytes | None, connections: int, seconds: float, timeout_s: float = 30.0
    ) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "BENCH_METHOD": "POST" if body is not None else "GET",
            "BENCH_BODY": str(self._body_file(body)) if body is not None else "",
        }
        command = [
            self.binary,
            "-t1",
            f"-c{connections}",
            f"-d{max(seconds, 1):g}s",
            f"--timeout={timeout_s:g}s",
            "-s",
            str(self._script),
            url,
        ]
        return subprocess.Popen(
            taskset(self.cpus, command), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    @staticmethod
    def result(process: subprocess.Popen[str]) -> LoadResult:
        output, _ = process.communicate(timeout=600)
        for line in output.splitlines():
            if line.startswith("BENCH "):
                data = json.loads(line[len("BENCH ") :])
                return LoadResult(
                    requests=data["requests"],
                    seconds=data["duration_us"] / 1e6,
                    non_2xx=data["non_2xx"],
                    socket_errors=data["socket_errors"],
                    timeouts=data["timeouts"],
                    p50_ms=data["p50_us"] / 1e3,
                    p90_ms=data["p90_us"] / 1e3,
                    p99_ms=data["p99_us"] / 1e3,
                    max_ms=data["max_us"] / 1e3,
                    mean_ms=data["mean_us"] / 1e3,
                )
        raise RuntimeError(f"wrk printed no result:\n{output}")

    def run(
        self, url: str, *, body: bytes | None, connections: int, seconds: float, server: Server | None = None
    ) -> LoadResult:
        """One wrk run; with ``server``, also the CPU time its process tree used meanwhile."""
        cpu_before = tree_cpu_seconds(server.pid) if server else 0.0
        result = self.result(self.start(url, body=body, connections=connections, seconds=seconds))
        if server is None:
            return result
        return dataclasses.replace(result, server_cpu_s=tree_cpu_seconds(server.pid) - cpu_before)


def alternate(
    wrk: Wrk, servers: dict[str, Server], body: bytes, *, connections: int, seconds: float, repeats: int
) -> dict[str, LoadResult]:
    """Warm each server up, then run them in turn (order flipped every repeat); field-wise medians."""
    names = list(servers)
    for name in names:
        wrk.run(servers[name].url + "/payload", body=body, connections=connections, seconds=min(seconds, 1))
    runs: dict[str, list[LoadResult]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            runs[name].append(
                wrk.run(
                    servers[name].url + "/payload",
                    body=body,
                    connections=connections,
                    seconds=seconds,
                    server=servers[name],
                )
            )
    for name, results in runs.items():
        broken = sum(r.socket_errors + r.timeouts for r in results)
        if broken:
            raise RuntimeError(f"{name}: {broken} socket errors or timeouts - the comparison is void")
    return {name: median_result(results) for name, results in runs.items()}


def median_result(results: Sequence[LoadResult]) -> LoadResult:
    """Field-wise medians of repeated runs (requests and seconds from the median-throughput run)."""
    middle = sorted(results, key=lambda r: r.rps)[len(results) // 2]
    return LoadResult(
        requests=middle.requests,
        seconds=middle.seconds,
        non_2xx=middle.non_2xx,
        socket_errors=middle.socket_errors,
        timeouts=middle.timeouts,
        p50_ms=statistics.median(r.p50_ms for r in results),
        p90_ms=statistics.median(r.p90_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        max_ms=statistics.median(r.max_ms for r in results),
        mean_ms=statistics.median(r.mean_ms for r in results),
        server_cpu_s=statistics.median(r.cpu_ms_per_request for r in results) * middle.requests / 1000,
    )


# ----------------------------------------------------------------------------------------- output


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(out: Path, name: str, markdown: str, data: object) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / f"{name}.md", out / f"{name}.json"
    md.write_text(markdown + "\n")
    js.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return [md, js]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def verdict(name: str, passed: bool, detail: str) -> bool:
    print(f"{name}: {'PASS' if passed else 'FAIL'} - {detail}")
    return passed
