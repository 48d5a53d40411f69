"""Pipelining, refusals and half-closed clients: every request that arrived whole is answered."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time

import httpx
import pytest

from tests.conftest import SEED_ANALYSIS, SEED_PAYLOAD, ServiceProcess, metric_value, require_tool

# A body past this many bytes is analysed in the pool: its answer is never ready at once.
POOL_FROM_BYTES = 1024


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    env = {"POOL_WORKERS": "1", "INLINE_THRESHOLD_BYTES": str(POOL_FROM_BYTES), "INLINE_ALONE_THRESHOLD_BYTES": "0"}
    service = ServiceProcess(env=env).start(tmp_path_factory.mktemp("connections"))
    yield service
    service.stop()


_HEAD = b"POST /payload HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"


def _post(body: bytes, extra_headers: bytes = b"") -> bytes:
    return _HEAD + b"Content-Length: %d\r\n" % len(body) + extra_headers + b"\r\n" + body


def _exchange(port: int, data: bytes, half_close: bool = False) -> list[tuple[int, bytes]]:
    """Send ``data`` at once, read until the server closes; the (status, body) of each response."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    responses = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
        responses.append((int(head.split(b" ", 2)[1]), rest[:length]))
        received = rest[length:]
    return responses


def _one_response(sock: socket.socket) -> bytes:
    """One whole response: its head and body may come in separate reads."""
    received = b""
    while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < _length(received):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {received!r}"
        received += chunk
    return received


def _length(received: bytes) -> int:
    return int(re.search(rb"(?im)^content-length: *(\d+)", received.partition(b"\r\n\r\n")[0]).group(1))


def _payload(count: int) -> bytes:
    return json.dumps({"numbers": list(range(count)), "text": "Pipelined. Twice."}).encode()


SMALL = _payload(3)
LARGE = _payload(400)  # past POOL_FROM_BYTES
assert len(SMALL) < POOL_FROM_BYTES < len(LARGE)


def test_pipelined_requests_are_answered_before_the_garbage_after_them(service: ServiceProcess) -> None:
    health = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
    responses = _exchange(service.port, _post(LARGE) + health + _post(SMALL) + b"GARBAGE\r\n\r\n")
    assert [status for status, _ in responses] == [200, 200, 200, 400]
    assert json.loads(responses[0][1])["numeric_analysis"]["count"] == 400
    assert json.loads(responses[2][1])["numeric_analysis"]["count"] == 3
    assert json.loads(responses[3][1])["type"] == "/problems/malformed-request"


def test_a_body_longer_than_declared_gets_both_answers(service: ServiceProcess) -> None:
    # The first 10 bytes are the body (truncated JSON); the rest cannot be a request.
    data = b"POST /payload HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"
    responses = _exchange(service.port, data + SMALL)
    assert [status for status, _ in responses] == [400, 400]
    assert json.loads(responses[0][1])["type"] == "/problems/malformed-json"
    assert json.loads(responses[1][1])["type"] == "/problems/malformed-request"


def test_a_request_past_the_header_limit_does_not_cut_off_the_one_before(service: ServiceProcess) -> None:
    oversized = b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    responses = _exchange(service.port, _post(LARGE) + oversized)
    assert [status for status, _ in responses] == [200, 431]


@pytest.mark.parametrize("body", [SMALL, LARGE], ids=["inline", "pool"])
def test_a_half_closed_client_gets_its_answer(service: ServiceProcess, body: bytes) -> None:
    responses = _exchange(service.port, _post(body), half_close=True)
    assert [status for status, _ in responses] == [200]
    assert json.loads(responses[0][1])["numeric_analysis"]["count"] == json.loads(body)["numbers"][-1] + 1


def test_a_half_closed_client_gets_every_pipelined_answer(service: ServiceProcess) -> None:
    responses = _exchange(service.port, _post(LARGE) + _post(SMALL) + _post(LARGE), half_close=True)
    assert [status for status, _ in responses] == [200, 200, 200]


def test_a_head_cut_short_by_a_half_close_is_a_400_after_the_answers(service: ServiceProcess) -> None:
    responses = _exchange(service.port, _post(LARGE) + b"GET /health HTTP/1.1\r\nHost: te", half_close=True)
    assert [status for status, _ in responses] == [200, 400]
    assert json.loads(responses[1][1])["type"] == "/problems/malformed-request"


@pytest.mark.parametrize(
    "cut_short",
    [
        _post(SMALL)[:-5],
        _HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{",
        _HEAD + b"Content-Length: 9\r\n\r\n",
    ],
    ids=["content-length", "chunked", "headers-only"],
)
@pytest.mark.parametrize("first", [_post(LARGE), b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"], ids=["pool", "fast"])
def test_a_body_cut_short_by_a_half_close_does_not_cost_the_answer_before_it(
    service: ServiceProcess, cut_short: bytes, first: bytes
) -> None:
    # Behind a pool job the cut-short request is still queued at the half-close; behind a fast
    # answer it is already running. Either way: the first answer, then a 400 for it.
    responses = _exchange(service.port, first + cut_short, half_close=True)
    assert [status for status, _ in responses] == [200, 400]
    assert json.loads(responses[1][1])["type"] == "/problems/incomplete-body"
    assert "Exception" not in service.log()


def test_a_lone_body_cut_short_by_a_half_close_gets_its_400(service: ServiceProcess) -> None:
    responses = _exchange(service.port, _post(LARGE)[:-5], half_close=True)
    assert [status for status, _ in responses] == [400]
    assert json.loads(responses[0][1])["type"] == "/problems/incomplete-body"


def test_bytes_that_begin_no_request_do_not_hold_an_idle_connection(service: ServiceProcess) -> None:
    with socket.create_connection(("127.0.0.1", service.port), timeout=15) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        assert _one_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"\r\n")  # allowed between requests (RFC 9112 2.2); it used to disarm the keep-alive
        assert sock.recv(65536) == b""  # closed by the keep-alive timeout (a timeout fails the test)


def test_a_lingering_close_outlasts_the_keep_alive_timeout(service: ServiceProcess) -> None:
    with socket.create_connection(("127.0.0.1", service.port), timeout=15) as sock:
        sock.sendall(
            b"POST /payload HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: 2000000\r\n\r\n"
        )
        # Still sending 7 s on, past the 5 s keep-alive timeout: no reset, the 415 is read after.
        for _ in range(14):
            sock.sendall(b"x" * 20_000)
            time.sleep(0.5)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 415 ")


# Upgrade offers as clients send them; none is taken (websockets are off, service/cli.py).
_H2C = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
_WEBSOCKET = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def test_an_upgrade_get_is_answered_as_http_and_the_connection_goes_on(service: ServiceProcess) -> None:
    upgrade = b"GET /health HTTP/1.1\r\nHost: test\r\n" + _WEBSOCKET + b"\r\n"
    health = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
    responses = _exchange(service.port, _post(LARGE) + upgrade + health, half_close=True)
    assert [status for status, _ in responses] == [200, 200, 200]
    assert json.loads(responses[1][1]) == json.loads(responses[2][1]) == {"status": "ok"}
    assert "Exception" not in service.log()


def test_curl_http2_on_an_http_url_gets_its_analysis(service: ServiceProcess) -> None:
    # On an http:// URL, curl --http2 sends HTTP/1.1 with an h2c offer; the offer was taken as the
    # end of the request and the body was lost: 400 malformed-json.
    curl = require_tool("curl")
    sent = subprocess.run(
        [curl, "-sSv", "--http2", "-H", "content-type: application/json", "-d", json.dumps(SEED_PAYLOAD)]
        + ["-w", "\n%{http_code}", f"{service.url}/payload"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sent.returncode == 0, sent.stderr
    assert "> Upgrade: h2c" in sent.stderr
    body, _, status = sent.stdout.rpartition("\n")
    assert status == "200"
    analysis = json.loads(body)
    del analysis["processing_time_ms"]
    assert analysis == SEED_ANALYSIS


def _chunked(body: bytes) -> bytes:
    half = len(body) // 2
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:], b""))


@pytest.mark.parametrize("offer", [_H2C, _WEBSOCKET], ids=["h2c", "websocket"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("body", [SMALL, LARGE], ids=["inline", "pool"])
def test_an_upgrade_offer_with_a_body_is_served_as_http_and_so_is_what_follows(
    service: ServiceProcess, offer: bytes, chunked: bool, body: bytes
) -> None:
    if chunked:
        request = _HEAD + b"Transfer-Encoding: chunked\r\n" + offer + b"\r\n" + _chunked(body)
    else:
        request = _post(body, offer)
    responses = _exchange(service.port, request + _post(SMALL), half_close=True)
    assert [status for status, _ in responses] == [200, 200]
    assert json.loads(responses[0][1])["numeric_analysis"]["count"] == json.loads(body)["numbers"][-1] + 1
    assert json.loads(responses[1][1])["numeric_analysis"]["count"] == 3


def test_an_upgrade_offer_that_closes_the_connection_gets_its_answer_first(service: ServiceProcess) -> None:
    # httptools reads nothing after a request that ends the connection, its own body included.
    offer = b"Connection: Upgrade, close\r\nUpgrade: h2c\r\n"
    responses = _exchange(service.port, _post(SMALL, offer) + _post(SMALL))
    assert [status for status, _ in responses] == [200]
    assert json.loads(responses[0][1])["numeric_analysis"]["count"] == 3


def test_nothing_after_a_connect_request_is_read(service: ServiceProcess) -> None:
    # What follows a CONNECT is a tunnel's, not HTTP: the request is answered, the connection ends.
    connect = b"CONNECT /health HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc"
    responses = _exchange(service.port, connect + b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    assert [status for status, _ in responses] == [405]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /health HTTP/1.1\r\nHost: test\r\nX-Unterminated: " + b"a" * (2 * 1024 * 1024),
        b"GET /health HTTP/1.1\r\nHost: test\r\n" + b"X: y\r\n" * 30_000 + b"\r\n",
    ],
    ids=["one-unterminated-line", "many-short-lines"],
)
def test_a_head_over_64_kib_is_431_however_it_is_spelled(service: ServiceProcess, head: bytes) -> None:
    responses = _exchange(service.port, head)
    assert [status for status, _ in responses] == [431]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /health HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
        _HEAD + b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
    ],
    ids=["route-ignores-the-body", "expect-100-continue"],
)
def test_a_bad_chunk_of_the_running_request_gets_one_answer(service: ServiceProcess, head: bytes) -> None:
    responses = _exchange(service.port, head)
    assert [status for status, _ in responses] == [400]
    assert json.loads(responses[0][1])["type"] == "/problems/malformed-request"
    assert "Traceback" not in service.log()


@pytest.mark.parametrize(
    "data, half_close, method, route, problem",
    [
        (
            b"GET /health HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
            False,
            "GET",
            "/health",
            "malformed-request",
        ),
        (
            _HEAD + b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
            False,
            "POST",
            "/payload",
            "malformed-request",
        ),
        (_post(SMALL)[:-5], True, "POST", "/payload", "incomplete-body"),
    ],
    ids=["route-ignores-the-body", "expect-100-continue", "cut-short-by-a-half-close"],
)
def test_a_refused_body_of_the_running_request_is_counted_as_the_answer_sent(
    service: ServiceProcess, data: bytes, half_close: bool, method: str, route: str, problem: str
) -> None:
    # Its route still answers (a 200, or its own 400), but only the refusal reaches the client.
    before = httpx.get(f"{service.url}/metrics", timeout=10).text
    responses = _exchange(service.port, data, half_close=half_close)
    after = httpx.get(f"{service.url}/metrics", timeout=10).text
    assert [status for status, _ in responses] == [400]

    def counted(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert counted("http_requests_total", method=method, route=route) == 1
    assert counted("http_requests_total", method=method, route=route, status="400") == 1
    assert counted("http_problems_total", type=problem) == 1
    assert counted("http_problems_total") == 1
    assert counted("http_response_size_bytes_sum", method=method, route=route) == len(responses[0][1])


@pytest.mark.parametrize(
    "head, first_part",
    [
        (b"POST /health HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\n", b"a"),  # 405
        (_HEAD + b"Content-Length: 100000000\r\n\r\n", b" " * 1000),  # 413
    ],
    ids=["405", "413"],
)
def test_a_connection_answered_before_its_body_closes_once_the_client_stops(
    service: ServiceProcess, head: bytes, first_part: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", service.port), timeout=15) as sock:
        sock.sendall(head)
        status = int(sock.recv(65536).split(b" ", 2)[1])
        sock.sendall(first_part)  # then nothing: it used to hold the connection for ever
        while sock.recv(65536):  # the answer's rest, then the close (a timeout fails the test)
            pass
    assert status in (405, 413)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /payload HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n",  # 415
        b"POST /health HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n",  # 405
        _HEAD + b"Content-Length: 100000000\r\n\r\n",  # 413
    ],
    ids=["415", "405", "413"],
)
def test_an_answer_before_its_body_says_the_connection_closes(service: ServiceProcess, head: bytes) -> None:
    # Without it a client sent its next request on the closing connection and read no answer
    # ("Server disconnected without sending a response", the fuzz tests' odd content types).
    with socket.create_connection(("127.0.0.1", service.port), timeout=15) as sock:
        sock.sendall(head)
        answer_head = _one_response(sock).partition(b"\r\n\r\n")[0].lower()
    assert answer_head.split(b" ", 2)[1] in (b"415", b"405", b"413")
    assert b"\r\nconnection: close" in answer_head


def test_an_answer_after_its_whole_body_keeps_the_connection(service: ServiceProcess) -> None:
    with socket.create_connection(("127.0.0.1", service.port), timeout=15) as sock:
        sock.sendall(b"POST /payload HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nab")
        first = _one_response(sock)
        sock.sendall(_post(SMALL))
        second = _one_response(sock)
    assert first.startswith(b"HTTP/1.1 415 ") and b"connection: close" not in first.lower()
    assert second.startswith(b"HTTP/1.1 200 ")


def test_trailer_fields_over_64_kib_are_431(service: ServiceProcess) -> None:
    # httptools holds an unterminated trailer line whole, copying it on every read.
    body = _HEAD + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\nX-Unterminated: " % (len(SMALL), SMALL)
    responses = _exchange(service.port, body + b"a" * (2 * 1024 * 1024))
    assert [status for status, _ in responses] == [431]


def test_chunks_and_trailers_within_the_limits_are_read_whole(service: ServiceProcess) -> None:
    text = "Long. " * 50_000  # one chunk of 300 kB, sent in pieces: chunk data does not count as a head
    body = json.dumps({"numbers": [1, 2], "text": text}).encode()
    with socket.create_connection(("127.0.0.1", service.port), timeout=15) as sock:
        sock.sendall(_HEAD + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body))
        for start in range(0, len(body), 65536):
            sock.sendall(body[start : start + 65536])
            time.sleep(0.02)
        sock.sendall(b"\r\n0\r\nX-Checksum: " + b"c" * 40_000 + b"\r\n\r\n")
        answer = _one_response(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["text_analysis"]["sentence_count"] == 50_000


def test_pipelined_requests_past_the_limit_get_a_429_after_the_answers(service: ServiceProcess) -> None:
    # uvicorn queues every request a read holds; 64 may wait behind the one running.
    health = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
    responses = _exchange(service.port, health * 200)
    statuses = [status for status, _ in responses]
    assert statuses[-1] == 429, statuses
    assert json.loads(responses[-1][1])["type"] == "/problems/too-many-pipelined-requests"
    assert 65 <= len(statuses) - 1 < 200 and set(statuses[:-1]) == {200}


def test_an_http_1_0_client_expecting_100_continue_gets_no_interim_answer(service: ServiceProcess) -> None:
    # RFC 9110 10.1.1: HTTP/1.0 has no 1xx; the client would take the 100 as the final answer.
    head = b"POST /payload HTTP/1.0\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
    with socket.create_connection(("127.0.0.1", service.port), timeout=15) as sock:
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(SMALL))
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        sock.settimeout(15)
        sock.sendall(SMALL)
        answer = _one_response(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
