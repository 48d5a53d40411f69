"""POST /payload: validate the request cheaply from its headers, then hand the body to compute.

This is the hot path, so it is a plain ASGI app rather than a Request -> Response endpoint: for a
small payload, building those objects would cost more than the analysis itself. Errors are still
raised as Problem and answered by the app's exception handlers.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from starlette.types import Receive, Scope, Send

from compute.decoding import InvalidPayload, MalformedPayload
from compute.dispatch import Overloaded
from compute.pool import ComputeTimeout, PoolUnavailable
from service.deadlines import Deadlines
from service.errors import FieldError, Problem
from service.services import Services

_JSON = b"application/json"


class PayloadRoute:
    """The ASGI app behind ``Route("/payload", ...)``; Starlette has already checked the method."""

    def __init__(self, services: Services) -> None:
        self.dispatcher = services.dispatcher
        self.metrics = services.metrics
        self.limit = services.settings.max_body_bytes
        self.body_deadlines = Deadlines(services.settings.body_timeout_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _check_headers(scope["headers"], self.limit)
        dispatcher = self.dispatcher
        mode = dispatcher.mode_for(declared)
        try:
            with dispatcher.reserve(mode):
                if dispatcher.streams(declared, mode):
                    # Large (or chunked) and bound for the pool: written into its slot as it arrives.
                    async with dispatcher.receiving(declared) as arriving:
                        await self._read_body(receive, arriving.append)
                        analysis = await dispatcher.analyze(arriving.shared(), mode)
                else:
                    chunks: list[bytes] = []
                    await self._read_body(receive, chunks.append)
                    # The body lives no longer than its analysis (the dispatcher then releases memory).
                    analysis = await dispatcher.analyze(_joined(chunks), mode)
        except Overloaded as error:
            raise Problem(
                503,
                "overloaded",
                "Service Unavailable",
                f"Too many analyses in progress ({error}); retry shortly.",
                headers={"retry-after": str(error.retry_after_s)},
            ) from None
        except MalformedPayload as error:
            raise Problem(400, "malformed-json", "Bad Request", f"The body is not valid JSON: {error}") from None
        except InvalidPayload as error:
            raise Problem(
                422,
                "validation-error",
                "Unprocessable Content",
                f"{error.message} at {error.path}",
                errors=[FieldError(path=error.path, message=error.message)],
            ) from None
        except ComputeTimeout as error:
            raise Problem(504, "compute-timeout", "Gateway Timeout", str(error)) from None
        except PoolUnavailable as error:
            raise Problem(
                503, "pool-unavailable", "Service Unavailable", str(error), headers={"retry-after": "1"}
            ) from None
        self.metrics.observe_payload(analysis.numeric_analysis.count, analysis.text_analysis.character_count)
        content = msgspec.json.encode(analysis)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", _JSON), (b"content-length", b"%d" % len(content))],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def _read_body(self, receive: Receive, append: Callable[[bytes], None]) -> None:
        """The whole body, piece by piece to ``append``, within BODY_TIMEOUT_S: a slow or stalled
        client must not hold a job slot."""
        size = 0
        try:
            with self.body_deadlines.within():
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise Problem(
                            400,
                            "incomplete-body",
                            "Bad Request",
                            "The client disconnected before sending the whole body.",
                        )
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.limit:
                        raise _too_large(self.limit)
                    append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            # Answered before its body arrived, the connection then closes (service/http_guards.py).
            raise Problem(
                408,
                "request-timeout",
                "Request Timeout",
                f"The body was not received within {self.body_deadlines.seconds:g} s.",
            ) from None


def _joined(chunks: list[bytes]) -> bytes:
    """The body, the chunks let go: only the joined copy stays in memory."""
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    chunks.clear()
    return body


def _check_headers(headers: list[tuple[bytes, bytes]], limit: int) -> int | None:
    """Refuse what the headers already rule out; return the declared body size (None when chunked)."""
    content_type = content_length = content_encoding = transfer_encoding = None
    # ASGI servers lower-case header names. Every line of a repeated header counts: a second
    # Content-Type is refused, repeated codings are one list (RFC 9110 5.3).
    for name, value in headers:
        if name == b"content-type":
            if content_type is not None:
                raise _unsupported_media_type("Content-Type must be sent once.")
            content_type = value
        elif name == b"content-length":
            content_length = value  # the HTTP server has already refused repeated or malformed ones
        elif name == b"content-encoding":
            content_encoding = value if content_encoding is None else content_encoding + b"," + value
        elif name == b"transfer-encoding":
            transfer_encoding = value if transfer_encoding is None else transfer_encoding + b"," + value
    if content_type != _JSON:
        _require_json(content_type)
    if content_encoding is not None and _codings(content_encoding) - {"identity"}:
        raise _unsupported_media_type(
            f"Content-Encoding {content_encoding.decode('latin-1')} is not supported; send the body uncompressed."
        )
    if transfer_encoding is not None and transfer_encoding.strip().lower() != b"chunked":
        # The HTTP server only ever decodes chunked, the last coding; one before it would be ignored.
        raise Problem(
            501,
            "unsupported-transfer-coding",
            "Not Implemented",
            f"Transfer-Encoding {transfer_encoding.decode('latin-1')} is not supported; send chunked alone.",
        )
    if content_length is None:
        return None
    size = int(content_length)
    if size > limit:
        raise _too_large(limit)
    return size


def _codings(value: bytes) -> set[str]:
    return {coding.strip().lower() for coding in value.decode("latin-1").split(",") if coding.strip()}


def _require_json(content_type: bytes | None) -> None:
    """application/json, with any parameters, in UTF-8 (the only charset JSON allows)."""
    text = (content_type or b"").decode("latin-1")
    media_type, _, parameters = text.partition(";")
    if media_type.strip().lower() != "application/json":
        raise _unsupported_media_type(f"Content-Type must be application/json, got {text or 'none'}.")
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in {"utf-8", "utf8"}:
            raise _unsupported_media_type("JSON bodies must be UTF-8.")


def _unsupported_media_type(detail: str) -> Problem:
    return Problem(415, "unsupported-media-type", "Unsupported Media Type", detail)


def _too_large(limit: int) -> Problem:
    return Problem(413, "payload-too-large", "Content Too Large", f"The body exceeds {limit} bytes.")
