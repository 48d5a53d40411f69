"""Process-level behaviour: signals, draining, the pool's recovery, backpressure."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import ROOT, SEED_PAYLOAD, ServiceProcess, group_members, read_response, scrape_metric, wait_until

pytestmark = pytest.mark.slow

LARGE_COUNT = 300_000
LARGE_BODY = json.dumps({"numbers": list(range(LARGE_COUNT)), "text": "Many words here. " * 2000}).encode()
JSON = {"content-type": "application/json"}


def post_large(url: str) -> httpx.Response:
    with httpx.Client(timeout=60) as client:
        return client.post(f"{url}/payload", content=LARGE_BODY, headers=JSON)


def pool_pids(service: ServiceProcess) -> list[int]:
    """Worker PIDs from the latest 'process pool warm' log record."""
    warm = [json.loads(line) for line in service.log().splitlines() if '"process pool warm"' in line]
    return warm[-1]["pids"]


def assert_all_correct(responses: list[httpx.Response]) -> None:
    assert [r.status_code for r in responses] == [200] * len(responses), [
        r.text[:200] for r in responses if r.status_code != 200
    ]
    for response in responses:
        numeric = response.json()["numeric_analysis"]
        assert numeric["count"] == LARGE_COUNT
        assert numeric["median"] == (LARGE_COUNT - 1) / 2


def assert_exits_cleanly(service: ServiceProcess) -> None:
    assert service.wait(timeout=60) == 0, service.log()[-3000:]
    # Pool workers and the forkserver leave with the service.
    wait_until(lambda: not group_members(service.pid), timeout=10, message="no process left in the service's group")


def shutdown_with_requests_in_flight(service: ServiceProcess, send_signal) -> None:
    """24 large requests are mid-upload when the signal arrives; each must still be answered."""
    in_flight = 24
    release = threading.Event()

    def held_back_body():
        yield LARGE_BODY[:-100]
        release.wait(timeout=60)
        yield LARGE_BODY[-100:]

    def post_held_back() -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            return client.post(f"{service.url}/payload", content=held_back_body(), headers=JSON)

    with ThreadPoolExecutor(in_flight) as executor:
        futures = [executor.submit(post_held_back) for _ in range(in_flight)]
        # The /metrics request itself is in flight too.
        wait_until(
            lambda: scrape_metric(service.url, "http_requests_in_flight") >= in_flight + 1,
            timeout=30,
            message=f"{in_flight} requests in flight",
        )
        send_signal()
        wait_until(lambda: "received: draining" in service.log(), timeout=10, message="the signal to be handled")
        release.set()
        responses = [future.result() for future in futures]
    assert_all_correct(responses)
    assert_exits_cleanly(service)


def test_sigterm_completes_every_request_in_flight(start_service) -> None:
    service = start_service(env={"POOL_WORKERS": "2", "MAX_PENDING": "64"})
    shutdown_with_requests_in_flight(service, lambda: service.signal(signal.SIGTERM))
    log = service.log()
    assert log.index("SIGTERM received") < log.index("joining the compute pool") < log.index("compute pool joined")


def test_sigint_to_the_whole_process_group_is_the_same(start_service) -> None:
    service = start_service(env={"POOL_WORKERS": "2", "MAX_PENDING": "64"})
    # As Ctrl-C in a terminal: every process in the group gets SIGINT, pool workers included.
    shutdown_with_requests_in_flight(service, lambda: os.killpg(service.pid, signal.SIGINT))


def test_sigterm_to_the_whole_process_group_is_the_same(start_service) -> None:
    service = start_service(env={"POOL_WORKERS": "2", "MAX_PENDING": "64"})
    # As a container runtime or `kill -- -PGID`: the forkserver and workers get SIGTERM too.
    shutdown_with_requests_in_flight(service, lambda: os.killpg(service.pid, signal.SIGTERM))


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read()
    except OSError:
        return b""


def start_unwaited(tmp_path, env: dict[str, str]) -> ServiceProcess:
    """A service process started without waiting for it to be ready."""
    service = ServiceProcess(env=env)
    service.log_path = tmp_path / "service.log"
    with service.log_path.open("wb") as log:
        service.process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=ROOT,
            env={**os.environ, "HOST": "127.0.0.1", "PORT": str(service.port), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return service


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_group_while_the_pool_starts_is_a_clean_drain(tmp_path, sig) -> None:
    # As Ctrl-C right after start: the forkserver is just starting and has not yet ignored it.
    service = start_unwaited(tmp_path, {"POOL_WORKERS": "2"})
    try:
        wait_until(
            lambda: any(b"forkserver" in cmdline(pid) for pid in group_members(service.pid)),
            timeout=30,
            interval=0.001,
            message="the forkserver to start",
        )
        os.killpg(service.pid, sig)
        assert_exits_cleanly(service)
    finally:
        service.stop()
    assert "Application startup failed" not in service.log()


def test_ctrl_c_while_several_workers_start_is_a_clean_drain(tmp_path) -> None:
    # SIGINT to the whole group reaches the workers while they still import the service; the
    # supervisor's SIGTERM follows.
    service = start_unwaited(tmp_path, {"WEB_CONCURRENCY": "2", "POOL_WORKERS": "1"})
    try:
        wait_until(
            lambda: sum(b"spawn_main" in cmdline(pid) for pid in group_members(service.pid)) == 2,
            timeout=30,
            interval=0.001,
            message="both workers to be started",
        )
        os.killpg(service.pid, signal.SIGINT)
        assert_exits_cleanly(service)
    finally:
        service.stop()
    assert "workers exited uncleanly" not in service.log()


def test_draining_turns_unready_but_keeps_serving(start_service) -> None:
    service = start_service(env={"POOL_WORKERS": "1", "SHUTDOWN_DELAY_S": "6"})
    service.signal(signal.SIGTERM)
    wait_until(lambda: "received: draining" in service.log(), timeout=10, message="the signal to be handled")
    # The gauge follows without anyone asking /ready.
    wait_until(lambda: scrape_metric(service.url, "service_ready") == 0, timeout=4, message="service_ready 0")
    with httpx.Client(base_url=service.url, timeout=10) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["reason"] == "draining"
        assert ready.headers["content-type"] == "application/problem+json"
        # Load balancers may still send requests until they notice: they are served.
        assert client.post("/payload", json=SEED_PAYLOAD).status_code == 200
        assert client.get("/health").status_code == 200
    assert_exits_cleanly(service)


def connection_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def upload_in_progress(service: ServiceProcess, sent: bytes) -> socket.socket:
    """A connection whose POST /payload of LARGE_BODY has sent only ``sent``, once the service reads it."""
    held = socket.create_connection(("127.0.0.1", service.port), timeout=30)
    held.sendall(
        b"POST /payload HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(LARGE_BODY)}\r\n\r\n".encode()
        + sent
    )
    # The /metrics request itself is in flight too.
    wait_until(lambda: scrape_metric(service.url, "http_requests_in_flight") >= 2, timeout=10, message="body arriving")
    return held


def test_several_workers_close_the_listener_once_their_drain_begins(start_service) -> None:
    service = start_service(env={"WEB_CONCURRENCY": "2", "POOL_WORKERS": "1"})
    wait_until(lambda: service.log().count('"message": "service ready"') == 2, timeout=30, message="both workers ready")
    # A body still arriving keeps its worker draining, and the supervisor waiting for it.
    with upload_in_progress(service, LARGE_BODY[:-100]) as held:
        service.signal(signal.SIGTERM)
        wait_until(lambda: service.log().count('"message": "Shutting down"') == 2, timeout=10, message="drains")
        # No process accepts connections any more: new ones are refused, not held and then reset.
        wait_until(lambda: connection_refused(service.port), timeout=10, message="the listener to close")
        held.sendall(LARGE_BODY[-100:])
        answer = read_response(held)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["numeric_analysis"]["count"] == LARGE_COUNT
    assert_exits_cleanly(service)


@pytest.mark.parametrize("answered_before", [0, 1], ids=["first on its connection", "after an answered request"])
def test_a_head_half_received_when_the_listener_closes_is_answered(start_service, answered_before) -> None:
    service = start_service(env={"POOL_WORKERS": "1", "SHUTDOWN_DELAY_S": "1"})
    body = json.dumps(SEED_PAYLOAD).encode()
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as held:
        for _ in range(answered_before):
            held.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            assert read_response(held).startswith(b"HTTP/1.1 200 ")
        held.sendall(b"POST /payload HTTP/1.1\r\nHost: test\r\n")
        service.signal(signal.SIGTERM)
        wait_until(lambda: connection_refused(service.port), timeout=10, message="the listener to close")
        # The request was on its way: it is served, as the last on its connection.
        held.sendall(b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        answer = read_response(held)
        assert held.recv(1) == b"", "the connection stays open"
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer
    assert b"connection: close" in head.lower()
    assert json.loads(content)["numeric_analysis"]["count"] == len(SEED_PAYLOAD["numbers"])
    assert_exits_cleanly(service)


def test_a_request_the_graceful_timeout_cuts_short_gets_a_problem(start_service) -> None:
    service = start_service(env={"POOL_WORKERS": "1", "GRACEFUL_TIMEOUT_S": "1"})
    # Its body never completes: the drain's time runs out first.
    with upload_in_progress(service, LARGE_BODY[:1000]) as held:
        service.signal(signal.SIGTERM)
        answer = read_response(held).decode()
    assert answer.startswith("HTTP/1.1 503 "), answer
    assert "content-type: application/problem+json" in answer.lower()
    assert "connection: close" in answer.lower()
    assert '"type":"/problems/shut-down"' in answer
    assert_exits_cleanly(service)


def unread_answers(port: int, count: int, answered) -> tuple[socket.socket, int]:
    """A connection sent up to ``count`` 404s (60 KB answers) it never reads; how many got written.

    The socket buffers fill until the service's writes pause: the answer being written then waits.
    """
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    held.connect(("127.0.0.1", port))
    request = b"GET /" + b"x" * 60_000 + b" HTTP/1.1\r\nHost: test\r\n\r\n"  # the answer quotes the path
    before = answered()
    for sent in range(1, count + 1):
        held.sendall(request)
        try:
            wait_until(lambda sent=sent: answered() - before == sent, timeout=1, message="the answer written")
        except AssertionError:
            return held, sent - 1
    return held, count


def test_a_client_that_stops_reading_does_not_hold_the_exit(start_service) -> None:
    service = start_service(env={"POOL_WORKERS": "1", "GRACEFUL_TIMEOUT_S": "1"})

    def answered() -> float:
        return scrape_metric(service.url, "http_requests_total", route="<unmatched>")

    # How many unread answers pause the writes; on a second connection, the last of that many
    # pauses them while the POST after it waits for its body, so its answer cannot be written.
    calibration, written = unread_answers(service.port, 400, answered)
    calibration.close()
    assert written < 400, "the service's writes never paused"
    held, written_again = unread_answers(service.port, written, answered)
    with held:
        assert written_again == written
        held.sendall(
            b"POST /payload HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        wait_until(
            lambda: scrape_metric(service.url, "http_requests_in_flight") >= 2, timeout=10, message="the POST running"
        )
        service.signal(signal.SIGTERM)
        # GRACEFUL_TIMEOUT_S cuts the POST off; the process must not wait for its answer to be read.
        assert service.wait(timeout=30) == 0, service.log()[-3000:]
    assert "Exception in ASGI application" not in service.log()


@pytest.mark.parametrize("workers", [1, 2], ids=["one worker", "two workers"])
def test_a_second_sigint_ends_the_drain_with_exit_status_130(start_service, workers) -> None:
    service = start_service(env={"WEB_CONCURRENCY": str(workers), "POOL_WORKERS": "1"})
    wait_until(
        lambda: service.log().count('"message": "service ready"') == workers, timeout=30, message="workers ready"
    )
    # Its body never completes: only a forced exit ends the drain before BODY_TIMEOUT_S.
    with upload_in_progress(service, LARGE_BODY[:1000]):
        service.signal(signal.SIGINT)
        wait_until(lambda: service.log().count('"message": "Shutting down"') == workers, timeout=10, message="drains")
        service.signal(signal.SIGINT)
        # Not 0: whoever waits for the exit must learn that requests may have been cut short.
        assert service.wait(timeout=15) == 130, service.log()[-3000:]
    log = service.log()
    assert "forced exit: 1 request(s) cut short, 1 pool worker(s) killed" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    wait_until(lambda: not group_members(service.pid), timeout=10, message="no process left in the service's group")


def test_killed_worker_is_replaced_and_requests_retried(start_service) -> None:
    service = start_service(env={"POOL_WORKERS": "2", "MAX_PENDING": "64"})
    workers_before = pool_pids(service)
    stop = threading.Event()
    responses: list[httpx.Response] = []

    def client_loop() -> None:
        while not stop.is_set():
            responses.append(post_large(service.url))

    with ThreadPoolExecutor(4) as executor:
        loops = [executor.submit(client_loop) for _ in range(4)]
        wait_until(
            lambda: scrape_metric(service.url, "analysis_pool_busy_workers") >= 2, timeout=30, message="busy pool"
        )
        os.kill(workers_before[0], signal.SIGKILL)
        wait_until(
            lambda: scrape_metric(service.url, "analysis_pool_restarts_total") >= 1, timeout=30, message="pool restart"
        )
        served_after_restart = len(responses)
        wait_until(lambda: len(responses) >= served_after_restart + 4, timeout=60, message="requests after restart")
        stop.set()
        for loop in loops:
            loop.result()
    assert_all_correct(responses)
    assert httpx.get(f"{service.url}/ready").status_code == 200
    workers_after = pool_pids(service)
    assert len(workers_after) == 2 and not set(workers_after) & set(workers_before)
    assert scrape_metric(service.url, "analysis_pool_workers") == 2


def test_pool_processes_end_with_a_killed_service(start_service) -> None:
    # SIGKILL, as the OOM killer sends it: no handler runs, the pool is never shut down.
    service = start_service(env={"POOL_WORKERS": "2"})
    assert post_large(service.url).status_code == 200
    pool = [pid for pid in group_members(service.pid) if pid != service.pid]
    assert len(pool) >= 3, "the forkserver and two workers"
    os.kill(service.pid, signal.SIGKILL)
    service.wait(timeout=10)
    wait_until(lambda: not group_members(service.pid), timeout=10, message="the forkserver and workers to exit")


def test_backpressure_sheds_from_the_headers(start_service) -> None:
    service = start_service(env={"POOL_WORKERS": "1", "MAX_PENDING": "1"})
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as holder:
        # Headers of a large request, body withheld: it holds the only pending place.
        holder.sendall(
            b"POST /payload HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(LARGE_BODY)}\r\n\r\n".encode()
        )
        wait_until(lambda: scrape_metric(service.url, "analysis_pending_jobs") == 1, timeout=10, message="place taken")
        # Its body is still coming: no worker is busy with it.
        assert scrape_metric(service.url, "analysis_pool_busy_workers") == 0
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as second:
            second.sendall(
                b"POST /payload HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b"Content-Length: 5000000\r\n\r\n"
            )
            answer = read_response(second).decode()
        assert answer.startswith("HTTP/1.1 503 ")
        assert "retry-after: 1" in answer.lower()
        assert "/problems/overloaded" in answer
        # Small bodies are computed inline and are not shed.
        assert httpx.post(f"{service.url}/payload", json=SEED_PAYLOAD).status_code == 200
        holder.sendall(LARGE_BODY)
        assert read_response(holder).startswith(b"HTTP/1.1 200 ")
    assert scrape_metric(service.url, "analysis_requests_shed_total") == 1


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"POOL_WORKERS": "-1"}, (), "POOL_WORKERS='-1'"),
        ({"DISPATCH": "gpu"}, (), "DISPATCH='gpu': must be one of adaptive, inline, thread, process"),
        ({"PORT": "70000"}, (), "PORT='70000'"),
        ({"GRACEFUL_TIMEOUT_S": "soon"}, (), "GRACEFUL_TIMEOUT_S='soon'"),
        # Below the pool's rebuild, a timeout turned the jobs it broke into 503s (service/config.py).
        ({"COMPUTE_TIMEOUT_S": "0.05"}, (), "COMPUTE_TIMEOUT_S='0.05': must be at least 1 (seconds)"),
        ({}, ("--max-body-bytes", "0"), "--max-body-bytes='0'"),
    ],
)
def test_invalid_settings_stop_start_up_with_exit_code_2(env, args, message) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    assert message in result.stderr


def test_help_lists_every_option_with_its_environment_variable() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for variable in (
        "HOST",
        "PORT",
        "POOL_WORKERS",
        "DISPATCH",
        "MAX_NUMBERS",
        "MAX_TEXT_CHARS",
        "MAX_BODY_BYTES",
        "MAX_PENDING",
        "GRACEFUL_TIMEOUT_S",
        "SHUTDOWN_DELAY_S",
        "LOG_LEVEL",
    ):
        assert f"env {variable}," in text


def test_pool_size_follows_the_cpus_really_available(start_service) -> None:
    # Pinned to one CPU, the default pool has one worker, whatever os.cpu_count() says.
    pinned = start_service(prefix=("taskset", "-c", "0"))
    assert scrape_metric(pinned.url, "analysis_pool_workers") == 1
