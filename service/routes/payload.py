"""POST /payload: validate the request cheaply from its headers, then hand the body to compute."""

from __future__ import annotations

import asyncio

import msgspec
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from compute.analysis import InvalidPayload, MalformedPayload
from compute.dispatch import Overloaded
from compute.pool import ComputeTimeout, PoolUnavailable
from service.errors import FieldError, Problem
from service.services import services_of


async def analyze_payload(request: Request) -> Response:
    services = services_of(request)
    limit = services.settings.max_body_bytes
    _require_json(request.headers)
    declared = _declared_length(request.headers, limit)
    dispatcher = services.dispatcher
    mode = dispatcher.mode_for(declared)
    try:
        with dispatcher.reserve(mode):
            body = await _read_body(request, limit, services.settings.body_timeout_s)
            analysis = await dispatcher.analyze(body, mode)
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
    services.metrics.payload_numbers.observe(analysis.numeric_analysis.count)
    services.metrics.payload_text_chars.observe(analysis.text_analysis.character_count)
    return Response(msgspec.json.encode(analysis), media_type="application/json")


def _require_json(headers: Headers) -> None:
    content_type = headers.get("content-type")
    media_type, _, parameters = (content_type or "").partition(";")
    if media_type.strip().lower() != "application/json":
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported Media Type",
            f"Content-Type must be application/json, got {content_type or 'none'}.",
        )
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in {"utf-8", "utf8"}:
            raise Problem(415, "unsupported-media-type", "Unsupported Media Type", "JSON bodies must be UTF-8.")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported Media Type",
            f"Content-Encoding {encoding} is not supported; send the body uncompressed.",
        )


def _declared_length(headers: Headers, limit: int) -> int | None:
    """The body size from Content-Length (None when chunked); refuses an oversized one unread."""
    declared = headers.get("content-length")
    if declared is None:
        return None
    size = int(declared)  # the HTTP server has already rejected a malformed Content-Length
    if size > limit:
        raise _too_large(limit)
    return size


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, within ``timeout_s``: a slow or stalled client must not hold a job slot."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except ClientDisconnect:
        raise Problem(
            400, "incomplete-body", "Bad Request", "The client disconnected before sending the whole body."
        ) from None
    except TimeoutError:
        raise Problem(
            408,
            "request-timeout",
            "Request Timeout",
            f"The body was not received within {timeout_s:g} s.",
            headers={"connection": "close"},
        ) from None
    return b"".join(chunks)


def _too_large(limit: int) -> Problem:
    return Problem(413, "payload-too-large", "Content Too Large", f"The body exceeds {limit} bytes.")
