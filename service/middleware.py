"""Pure ASGI middleware: a request ID and RED metrics for every request, in one layer.

Both need to see the response start, so one wrapper of ``send`` serves them; on the hot path each
extra layer costs a coroutine per message. The same layer answers a request that the shutdown cut
short (uvicorn cancels the requests still running once GRACEFUL_TIMEOUT_S has passed, and would
answer them with a plain-text 500).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Iterable
from contextvars import ContextVar

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import Problem
from service.metrics import UNMATCHED_ROUTE, Metrics

REQUEST_ID_HEADER = b"x-request-id"
# Set by the protocol guard (service/http_guards.py) on a running request whose own body it
# refused (a bad chunk, a half-close): the status, problem type and body size of the answer the
# client got instead of the route's, which is never written.
REFUSED_SCOPE_KEY = "service.refused"
# The current request's ID, for log records.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_ACCEPTABLE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")


class TelemetryMiddleware:
    """Echo a client's X-Request-ID (when sane) or make one; count, time and size every request.

    Metrics are labelled by route template, so unknown paths cannot create series.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = request_id_for(scope["headers"])
        token = request_id.set(incoming.decode())
        status = 500
        started_response = False
        problem: bytes | None = None
        received = 0
        sent = 0
        # The HTTP server drops the body a route writes for HEAD: the client gets the head alone.
        head_only = scope["method"] == "HEAD"

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def observing_send(message: Message) -> None:
            nonlocal status, started_response, problem, sent
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                headers = message.get("headers", ())
                problem = _header_in(headers, b"x-problem-type")
                message["headers"] = [*headers, (REQUEST_ID_HEADER, incoming)]
            elif message["type"] == "http.response.body" and not head_only:
                sent += len(message.get("body", b""))
            await send(message)

        metrics = self.metrics
        metrics.request_started()
        try:
            await self.app(scope, counting_receive, observing_send)
        except asyncio.CancelledError:
            if started_response:
                problem = b"internal-error"
                raise
            # The drain's time is up: answered 503 rather than cut off; the connection then closes
            # at once (uvicorn's shutdown has marked it), so a body still arriving may be reset.
            await _SHUT_DOWN.response()(scope, counting_receive, observing_send)
        except BaseException:
            problem = b"internal-error"
            raise
        finally:
            request_id.reset(token)
            refused = scope.get(REFUSED_SCOPE_KEY)
            if refused is not None:
                status, problem, sent = refused
            metrics.request_finished(
                scope["method"], _route_template(scope), status, time.perf_counter() - started, received, sent
            )
            if problem is not None:
                metrics.problem(status, problem.decode())


_SHUT_DOWN = Problem(
    503,
    "shut-down",
    "Service Unavailable",
    "The service shut down before this request was complete; retry it.",
    headers={"connection": "close", "retry-after": "1"},
)


def request_id_for(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The client's X-Request-ID when it is sane, else a new one."""
    incoming = _header_in(headers, REQUEST_ID_HEADER)
    if incoming is None or not _ACCEPTABLE_REQUEST_ID.fullmatch(incoming):
        # 128 bits as 32 hex digits; an ID needs to be unique, not unpredictable.
        incoming = b"%032x" % random.getrandbits(128)
    return incoming


def _route_template(scope: Scope) -> str:
    # Starlette's router records the matched route in the scope; unknown paths share one label.
    route: BaseRoute | None = scope.get("route")
    return getattr(route, "path", UNMATCHED_ROUTE) if route is not None else UNMATCHED_ROUTE


def _header_in(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    # ASGI header names are lower-case, in requests and in Starlette's responses alike.
    for key, value in headers:
        if key == name:
            return value
    return None
