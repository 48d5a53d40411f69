"""GET /health (liveness) and GET /ready (readiness)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.errors import Problem
from service.services import services_of


async def health(request: Request) -> Response:
    """Alive whenever the event loop answers."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """200 only when the compute pool is warm and the service is not draining."""
    services = services_of(request)
    reason = services.lifecycle.not_ready_reason(services.dispatcher)
    if reason:
        raise Problem(503, "not-ready", "Service Unavailable", f"Not ready: {reason}.", reason=reason)
    return JSONResponse({"status": "ready"})
