"""Pure ASGI middleware: request IDs and RED metrics, cheap enough for every request."""

from __future__ import annotations

import os
import re
import time
from contextvars import ContextVar

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import UNMATCHED_ROUTE, Metrics

REQUEST_ID_HEADER = b"x-request-id"
# The current request's ID, for log records.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_ACCEPTABLE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")


class RequestIdMiddleware:
    """Echo a client's X-Request-ID (when sane) or generate one, on the response and in logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER)
        if incoming is None or not _ACCEPTABLE_REQUEST_ID.fullmatch(incoming):
            # 128 random bits as 32 hex digits, like uuid4().hex without building a UUID.
            incoming = os.urandom(16).hex().encode()
        token = request_id.set(incoming.decode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, incoming)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class MetricsMiddleware:
    """Count, time and size every HTTP request, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        started = time.perf_counter()
        status = 500
        problem: bytes | None = None
        received = 0
        sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def observing_send(message: Message) -> None:
            nonlocal status, problem, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                problem = _header_in(message.get("headers", ()), b"x-problem-type")
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        metrics.in_flight.inc()
        try:
            await self.app(scope, counting_receive, observing_send)
        except BaseException:
            problem = b"internal-error"
            raise
        finally:
            metrics.in_flight.dec()
            metrics.observe_request(
                scope["method"], _route_template(scope), status, time.perf_counter() - started, received, sent
            )
            if problem is not None:
                metrics.problems.labels(str(status), problem.decode()).inc()


def _route_template(scope: Scope) -> str:
    # Starlette's router records the matched route in the scope; unknown paths share one label.
    route: BaseRoute | None = scope.get("route")
    return getattr(route, "path", UNMATCHED_ROUTE) if route is not None else UNMATCHED_ROUTE


def _header(scope: Scope, name: bytes) -> bytes | None:
    return _header_in(scope["headers"], name)


def _header_in(headers: object, name: bytes) -> bytes | None:
    for key, value in headers:  # type: ignore[attr-defined]
        if key.lower() == name:
            return value
    return None
