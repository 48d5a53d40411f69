"""uvicorn's httptools protocol with the limits it lacks, and its own errors as problems.

uvicorn arms no timer until a first response is sent, and httptools accepts headers of any size,
so a client that opens a connection and sends nothing, trickles its headers (slowloris), or sends
megabytes of headers would hold a connection, and memory, for ever. Here the request line and
headers must arrive within HEADER_TIMEOUT_S and total at most MAX_HEADER_BYTES; otherwise the
client gets 408 or 431 and the connection is closed. The body has its own deadline, in the
/payload route (BODY_TIMEOUT_S). The deadline is checked by one watchdog per connection, once a
second, so a request costs two attribute writes rather than a timer.

A request that is not valid HTTP gets a 400 problem instead of uvicorn's plain-text one. Every
refusal here carries an X-Request-ID (the client's, if its header was read, else a new one), also
in its log record, and is counted in the RED metrics (route "<unmatched>", method OTHER), as the
app would; a refused body of the request running is counted on its route, as the refusal.

No upgrade is taken (websockets are off): an Upgrade offer is ignored, and the request, its body
and what follows are read as HTTP/1.1 (see _feed: httptools skips an upgrade request's body).

A refusal never cuts off the answers to requests that arrived whole before the refused bytes
(pipelined, or a body followed by garbage): it is written after them. A client that half-closes
its side once its requests are sent still gets their answers (RFC 9112 9.6); the connection then
closes. A connection that ends while the client may still be sending (a refusal, an answer given
before its body arrived) closes lingering, so that the client reads the answer, not a reset; an
answer begun before its body arrived says so (`connection: close`), or the client would send its
next request on a connection that is closing.
docs/api.md ("Connections") states the rules; tests/core/test_connections.py pins them.

The limits are class constants, not settings: the class is handed to uvicorn by reference, so
uvicorn's worker processes (WEB_CONCURRENCY > 1) get the same limits.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import httptools
import msgspec
from uvicorn._types import ASGI3Application, ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.errors import PROBLEM_MEDIA_TYPE, ProblemDetails
from service.metrics import METRICS_STATE_KEY
from service.middleware import REFUSED_SCOPE_KEY, REQUEST_ID_HEADER, request_id_for

# nginx's defaults are 60 s and 4 x 8 KiB buffers; a client inside the cluster needs far less time.
HEADER_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 64 * 1024
# Requests parsed ahead of their answers on one connection (HTTP pipelining). uvicorn queues every
# request a read holds (thousands in 256 KiB of small GETs) and reads on while they wait.
MAX_PIPELINED_REQUESTS = 64

# By problem type: the status and the title, which is also the status line's reason phrase.
_PROBLEMS = {
    "malformed-request": (400, "Bad Request"),
    # As the /payload route words a body that never completes.
    "incomplete-body": (400, "Bad Request"),
    "request-timeout": (408, "Request Timeout"),
    "header-fields-too-large": (431, "Request Header Fields Too Large"),
    "too-many-pipelined-requests": (429, "Too Many Requests"),
}


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing; httptools turns it into a parser error."""


class _TooManyPipelined(Exception):
    """Raised from a parser callback, as _HeadersTooLarge."""


class _Refusal(NamedTuple):
    response: bytes
    status: int
    slug: str
    seconds: float  # since the refused head began (or the connection opened)
    body_bytes: int
    # A refused body of the request running is counted by its route, as this answer.
    counted: bool


# ": " and CRLF around each header's name and value.
_HEADER_LINE_OVERHEAD = 4
# Closing with unread bytes makes the kernel answer them with a reset, which may destroy the last
# answer before the client reads it. So a connection that ends while the client may still be
# sending (a refusal; an answer given before its body arrived, such as a 413) half-closes, then
# reads and drops what comes until the client closes, is quiet for _LINGER_IDLE_S, or
# _LINGER_MAX_S have passed (nginx's "lingering close").
_LINGER_IDLE_S = 2.0
_LINGER_MAX_S = 30.0


def _receiving_body(cycle: RequestResponseCycle | None) -> bool:
    """Whether ``cycle``'s body is still arriving while its answer is owed."""
    return cycle is not None and cycle.more_body and not cycle.response_complete


def _abandon(cycle: RequestResponseCycle) -> None:
    """Tell a request its client is gone: it reads a disconnect, and writes nothing more."""
    cycle.disconnected = True
    cycle.waiting_for_100_continue = False
    cycle.message_event.set()


class _Cycle(RequestResponseCycle):
    """uvicorn's request cycle, except that an answer begun before its body arrived closes."""

    # Its answer began while its body was still arriving; the connection closes after it.
    answered_early = False

    async def send(self, message: ASGISendEvent) -> None:
        if self.response_started or not self.more_body or not self.keep_alive:
            await super().send(message)
            return
        # The head says `connection: close`. uvicorn would then close as soon as the answer is
        # written, resetting the body still arriving; the protocol closes lingering instead
        # (on_response_complete).
        self.answered_early = True
        self.keep_alive = False
        await super().send(message)
        self.keep_alive = True


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s = HEADER_TIMEOUT_S
    max_header_bytes = MAX_HEADER_BYTES
    max_pipelined_requests = MAX_PIPELINED_REQUESTS
    # How often a connection's watchdog looks at it: the header deadline fires up to this late.
    watch_interval_s = 1.0

    _watchdog: asyncio.TimerHandle | None = None
    # When the current request's head began (or the connection opened); None once it is complete.
    _head_started: float | None = None
    # Whether a head has begun and is not complete yet; which one (each head has a number).
    _request_started = False
    _head_number = 0
    # The head's size: its complete header lines, and every read that fell wholly inside it (an
    # unterminated line, which httptools holds until it ends, shows only there).
    _header_bytes = 0
    _bytes_inside_head = 0
    _headers_too_large = False
    _too_many_pipelined = False
    # A chunk's size line was read and none of its data since: after the last chunk's, what comes
    # are trailer fields, which httptools also holds until each line ends. They count with the head.
    _after_chunk_header = False
    _bytes_inside_trailers = 0
    # The request whose application is running (uvicorn only tracks the latest one parsed).
    _running: RequestResponseCycle | None = None
    # Past refused bytes, or past a CONNECT request, nothing more is parsed.
    _reading_stopped = False
    # The parser is reading a stand-in head (see _feed): its callbacks are not a request's.
    _standing_in = False
    _refused = False  # one refusal per connection
    # A refusal written once the requests before the refused bytes are answered.
    _pending_refusal: _Refusal | None = None
    # The client half-closed after its last request: close once that is answered.
    _close_when_answered = False
    # The server shut down while a head was arriving: that request is the connection's last.
    _last_request_arriving = False
    _eof_received = False
    # While lingering: when it began, and when the last dropped bytes came.
    _linger_started: float | None = None
    _last_read = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # One timer per connection, re-armed while it lives, rather than one per request.
        self._head_started = self.loop.time()
        self._watchdog = self.loop.call_later(self.watch_interval_s, self._watch)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        # uvicorn tells only the latest request; one running ahead of it must not write either.
        if self._running is not None and not self._running.response_complete:
            _abandon(self._running)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_stopped:
            self._last_read = self.loop.time()
            return
        head = self._head_number if self._request_started else None
        in_trailers = self._after_chunk_header
        keep_alive = self.timeout_keep_alive_task
        self._feed(data)  # cancels the keep-alive timer
        if keep_alive is not None and self._idle():
            # Bytes that began no request (a bare CRLF between requests): the idle deadline stands.
            self.timeout_keep_alive_task = self.loop.call_at(keep_alive.when(), self.timeout_keep_alive_handler)
        if head is not None and self._request_started and self._head_number == head:
            self._bytes_inside_head += len(data)
            if self._bytes_inside_head > self.max_header_bytes and not self._reading_stopped:
                self._headers_too_large = True
                self._refuse_oversized_head()
        elif in_trailers and self._after_chunk_header:
            # A read wholly after a chunk's size line, with no chunk data: trailer fields.
            self._bytes_inside_trailers += len(data)
            if self._header_bytes + self._bytes_inside_trailers > self.max_header_bytes and not self._reading_stopped:
                self._headers_too_large = True
                self._refuse_oversized_head()

    def eof_received(self) -> bool:
        """Keep the connection open for the answers a half-closed client still awaits."""
        self._eof_received = True
        if self._linger_started is not None:
            return False  # the client is done sending: the lingering close is over
        if self._pending_refusal is not None:
            return True  # it waits for the answers before it
        latest = self.cycle
        if _receiving_body(latest):
            self._refuse("incomplete-body", "the client closed its side before sending the whole body", log=False)
            return True
        if self._request_started:
            self._refuse("malformed-request", "the client closed its side within a request head", log=False)
            return True
        if latest is not None and not latest.response_complete:
            self._close_when_answered = True
            return True
        return False

    def on_response_complete(self) -> None:
        more_queued = bool(self.pipeline)
        super().on_response_complete()  # starts the next pipelined request, if any
        if self.pipeline:
            self.flow.pause_reading()  # uvicorn resumes it: no more is read while requests wait
        if more_queued or self.transport.is_closing():
            return
        if self._pending_refusal is not None:
            self._write_refusal(self._pending_refusal)
        elif self._close_when_answered:
            self.transport.close()
        elif isinstance(self.cycle, _Cycle) and self.cycle.answered_early:
            # Answered before its body arrived (a 413, a 405): the rest of it is not read.
            self._reading_stopped = True
            self._close_lingering()
        elif self._request_started:
            self._unset_keepalive_if_required()  # a head has begun: its deadline applies instead

    def shutdown(self) -> None:
        """uvicorn's, except that a head still arriving is read and answered, then the connection closes.

        uvicorn closes every connection with no request parsed yet; a client whose head was on its
        way would see its connection close unanswered. The head's deadline (HEADER_TIMEOUT_S)
        still bounds the wait, and so does the drain's (GRACEFUL_TIMEOUT_S).
        """
        if self._request_started and not self._reading_stopped:
            self._last_request_arriving = True  # requests before it are answered first
            return
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error, a callback's exception included, with a plain-text
        # 400 (and has logged it already); here it is a problem like every other error.
        if self._headers_too_large:
            self._refuse_oversized_head()
        elif self._too_many_pipelined:
            self._refuse(
                "too-many-pipelined-requests",
                "more than %d pipelined requests await their answers; send the rest on a new connection"
                % self.max_pipelined_requests,
            )
        else:
            self._refuse("malformed-request", "the request is not valid HTTP/1.1", log=False)

    def on_message_begin(self) -> None:
        if self._standing_in:
            return
        super().on_message_begin()
        self._header_bytes = self._bytes_inside_head = 0
        self._request_started = True
        self._head_number += 1
        if self._head_started is None:  # a later request on a keep-alive connection
            self._head_started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        if self._standing_in:
            return
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._standing_in:
            return
        self._count_header_bytes(len(name) + len(value) + _HEADER_LINE_OVERHEAD)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._standing_in:
            self._standing_in = False  # what follows is the body of the request before
            return
        if len(self.pipeline) >= self.max_pipelined_requests:
            self._too_many_pipelined = True
            raise _TooManyPipelined
        self._head_started = None
        self._request_started = False
        if self.expect_100_continue and self.parser.get_http_version() == "1.0":
            self.expect_100_continue = False  # RFC 9110 10.1.1: an HTTP/1.0 client awaits no 100
        super().on_headers_complete()
        if self._last_request_arriving:
            self.cycle.keep_alive = False  # its answer says `connection: close`

    def on_chunk_header(self) -> None:
        self._after_chunk_header = True
        self._bytes_inside_trailers = 0

    def on_body(self, body: bytes) -> None:
        self._after_chunk_header = False
        super().on_body(body)

    def on_chunk_complete(self) -> None:
        self._after_chunk_header = False

    def on_message_complete(self) -> None:
        if self._upgrade_offered():
            return  # httptools ends the message at its head; its body follows (see _feed)
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # uvicorn builds the cycle inside on_headers_complete; it runs as ours.
        cycle.__class__ = _Cycle
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def _feed(self, data: bytes) -> None:
        """uvicorn's data_received, except that no upgrade is taken (websockets are off, cli.py).

        An Upgrade offer is ignored (RFC 9110 7.8): the request and what follows it are served as
        HTTP/1.1. httptools, though, ends an upgrade request at its head, skipping its body, and
        stops there. So the bytes after the head go to a new parser (the old one reads nothing more
        after a request that closes the connection) behind a stand-in head with the request's
        framing and persistence: it reads the body into the same request, then reads on as usual.
        """
        self._unset_keepalive_if_required()
        while True:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            except httptools.HttpParserUpgrade as upgrade:
                if self._upgrade_offered():
                    self.parser = httptools.HttpRequestParser(self)
                    self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn's
                    self._standing_in = True
                    data = self._stand_in_head() + data[upgrade.args[0] :]
                    continue
                # What follows a CONNECT is a tunnel's, not HTTP: it is not read, and the
                # connection closes after the answer.
                self._reading_stopped = True
                self.cycle.keep_alive = False
            return

    def _upgrade_offered(self) -> bool:
        """Whether httptools took the latest request for an Upgrade offer (CONNECT is not one)."""
        return self.parser.should_upgrade() and self.scope["method"] != "CONNECT"

    def _stand_in_head(self) -> bytes:
        """The latest request's head cut down to what says where its body ends and what follows."""
        lines = b"".join(
            b"%s: %s\r\n" % (name, value)
            for name, value in self.headers
            if name in (b"content-length", b"transfer-encoding", b"connection")
        )
        return b"%s / HTTP/%s\r\n%s\r\n" % (self.scope["method"].encode(), self.scope["http_version"].encode(), lines)

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._headers_too_large = True
            raise _HeadersTooLarge

    def _watch(self) -> None:
        self._watchdog = None
        if self.transport.is_closing():
            return
        started = self._head_started
        if started is not None and self.loop.time() - started >= self.header_timeout_s:
            if self._request_started:
                self._refuse("request-timeout", "request headers not received within %g s" % self.header_timeout_s)
            else:
                self.transport.close()  # an idle connection: nothing to answer
            return
        self._watchdog = self.loop.call_later(self.watch_interval_s, self._watch)

    def _refuse_oversized_head(self) -> None:
        self._refuse("header-fields-too-large", "request headers exceed %d bytes" % self.max_header_bytes)

    def _refuse(self, slug: str, reason: str, log: bool = True) -> None:
        """Answer in the problem format, outside the app (no route ran), and close.

        Requests received whole before the refused bytes are answered first. A refusal is counted
        when it is written: an answer before it may close the connection (HTTP/1.0, Connection:
        close, a draining service), and the refused bytes then go unanswered, like any after them.
        """
        if self._refused or self.transport.is_closing():
            return
        self._refused = self._reading_stopped = True
        # When the refused bytes are the latest request's own body (a bad chunk, say), that request
        # is never answered: it sees the disconnect if it is running, or leaves the queue.
        latest = self.cycle
        own_body = False
        if _receiving_body(latest):
            assert latest is not None
            queued = self._queued(latest)
            own_body = queued is None
            if own_body:
                _abandon(latest)
            else:
                self.pipeline.remove(queued)
        # Requests received whole before the refused bytes still await their answers.
        answers_owed = latest is not None and not latest.response_complete and not own_body
        # Only the head being refused may name the ID; the last one read may be an earlier request's.
        head = self.headers if self._head_started is not None else None
        request_id = request_id_for(head or ())
        if log:
            self.logger.warning("Refused a client: %s.", reason, extra={"request_id": request_id.decode()})
        status, title = _PROBLEMS[slug]
        body = msgspec.json.encode(
            ProblemDetails(
                type=f"/problems/{slug}", title=title, status=status, detail=reason[0].upper() + reason[1:] + "."
            )
        )
        response = (
            b"HTTP/1.1 %d %s" % (status, title.encode())
            + b"\r\ncontent-type: "
            + PROBLEM_MEDIA_TYPE.encode()
            + b"\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n"
            + REQUEST_ID_HEADER
            + b": "
            + request_id
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        started = self._head_started
        refusal = _Refusal(
            response,
            status,
            slug,
            self.loop.time() - started if started is not None else 0.0,
            len(body),
            counted=not own_body,
        )
        if own_body:
            assert latest is not None
            # Its route still answers, to nobody: it is counted as this refusal instead.
            latest.scope[REFUSED_SCOPE_KEY] = (status, slug.encode(), len(body))  # type: ignore[index]
        if answers_owed:
            self._pending_refusal = refusal
        else:
            self._write_refusal(refusal)

    def _write_refusal(self, refusal: _Refusal) -> None:
        self._pending_refusal = None
        self.transport.write(refusal.response)
        self._close_lingering()
        metrics = self.app_state.get(METRICS_STATE_KEY)
        if metrics is not None and refusal.counted:
            metrics.refused(refusal.status, refusal.slug, refusal.seconds, refusal.body_bytes)

    def _close_lingering(self) -> None:
        """Close once the client has stopped sending (see _LINGER_IDLE_S); reading is stopped."""
        self._unset_keepalive_if_required()  # the answer before armed it
        if self._eof_received or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._linger_started = self._last_read = self.loop.time()
        self.loop.call_later(_LINGER_IDLE_S, self._linger)

    def _linger(self) -> None:
        now = self.loop.time()
        assert self._linger_started is not None
        quiet_until = self._last_read + _LINGER_IDLE_S
        if now >= quiet_until or now - self._linger_started >= _LINGER_MAX_S:
            self.transport.close()
        elif not self.transport.is_closing():
            self.loop.call_later(quiet_until - now, self._linger)

    def _idle(self) -> bool:
        """No request is being received, queued or answered."""
        latest = self.cycle
        return (
            (latest is None or latest.response_complete)  # first: it settles the usual request
            and not self._request_started
            and not self._reading_stopped
            and not self.pipeline
            and self.timeout_keep_alive_task is None
            and not self.transport.is_closing()
        )

    def _queued(self, cycle: RequestResponseCycle) -> tuple[RequestResponseCycle, ASGI3Application] | None:
        return next((entry for entry in self.pipeline if entry[0] is cycle), None)
