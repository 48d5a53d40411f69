"""GET /metrics in the Prometheus text format (404 here when METRICS_PORT serves it instead)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from service.services import services_of


async def metrics(request: Request) -> Response:
    services = services_of(request)
    if services.settings.metrics_port:
        # Kept off the public port: it would reveal internals to anyone who can reach the service.
        raise HTTPException(404)
    registry = services.metrics
    return Response(registry.render(), media_type=registry.content_type)
