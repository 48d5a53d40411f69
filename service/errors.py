"""RFC 9457 problem details: every error the service returns has this shape."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(msgspec.Struct, frozen=True):
    path: str
    message: str


class ProblemDetails(msgspec.Struct, frozen=True, omit_defaults=True):
    """The body of every error response (RFC 9457)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = []
    reason: str | None = None


class Problem(Exception):
    """An error response; raise it anywhere in the HTTP layer."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.slug = slug
        self.headers = headers or {}
        self.details = ProblemDetails(
            type=f"/problems/{slug}",
            title=title,
            status=status,
            detail=detail,
            errors=errors or [],
            reason=reason,
        )

    def response(self) -> Response:
        headers = {"x-problem-type": self.slug, **self.headers}
        return Response(
            msgspec.json.encode(self.details),
            status_code=self.details.status,
            media_type=PROBLEM_MEDIA_TYPE,
            headers=headers,
        )


async def handle_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response()


_STARLETTE_PROBLEMS: dict[int, tuple[str, str]] = {
    404: ("not-found", "Not Found"),
    405: ("method-not-allowed", "Method Not Allowed"),
}


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Routing errors (404, 405) in the problem format."""
    assert isinstance(exc, HTTPException)
    slug, title = _STARLETTE_PROBLEMS.get(exc.status_code, ("http-error", "HTTP Error"))
    detail = f"{request.method} {request.url.path}: {exc.detail}"
    headers: dict[str, Any] = dict(exc.headers or {})
    return Problem(exc.status_code, slug, title, detail, headers=headers).response()


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """A bug: answer in the problem format; ServerErrorMiddleware logs the traceback."""
    return Problem(500, "internal-error", "Internal Server Error", "An unexpected error occurred.").response()
